package raft

// readIndexState tracks linearizable reads on a leader (dissertation
// section 6.4, ReadIndex). Each read waits for a heartbeat round that
// started after it; reads that arrive between two rounds share one.
//
// Invariant: pending is in increasing seq order and every seq <= seq+1.
type readIndexState struct {
	seq       uint64 // sequence number of the latest heartbeat round sent
	needBcast bool   // pending reads wait for a round not yet sent
	pending   []pendingRead
	// sentAt[s%len] is the tick at which round s was sent (for leases).
	sentAt [leaseRounds]uint64
	// leaseFloor: only rounds sent at or after this tick may start a
	// lease (set when a leadership transfer begins).
	leaseFloor uint64
}

// leaseRounds is how many recent heartbeat rounds remember their send time.
const leaseRounds = 64

type pendingRead struct {
	from NodeID // None for a local read
	ctx  uint64
	seq  uint64
}

func (r *readIndexState) reset() {
	r.needBcast = false
	r.pending = r.pending[:0]
}

// ReadIndex asks for a read index for a linearizable read identified by
// ctx. The answer arrives later as a ReadState with the same Context in a
// Ready: Index is the index the state machine must reach, or 0 if the read
// could not be served (leadership was lost). On a follower the request is
// forwarded to the leader; with no known leader it returns a
// *NotLeaderError at once.
func (c *Core) ReadIndex(ctx uint64) error {
	if c.role == Leader {
		if c.leaseValid() {
			c.readStates = append(c.readStates, ReadState{Index: c.log.committed, Context: ctx})
			return nil
		}
		c.readIndex(None, ctx)
		return nil
	}
	if c.lead == None {
		return &NotLeaderError{}
	}
	c.send(Message{To: c.lead, Type: MsgReadIndex, Context: ctx})
	return nil
}

// readIndex queues a read for the next heartbeat round.
func (c *Core) readIndex(from NodeID, ctx uint64) {
	c.reads.pending = append(c.reads.pending, pendingRead{from: from, ctx: ctx, seq: c.reads.seq + 1})
	c.reads.needBcast = true
}

// flushReads sends the heartbeat round pending reads wait for. It runs once
// per Ready so that all reads since the last Ready share one round.
func (c *Core) flushReads() {
	if !c.reads.needBcast || c.role != Leader {
		return
	}
	c.reads.needBcast = false
	c.bcastHeartbeat()
	c.advanceReads()
}

// readAckedRound returns the latest heartbeat round a majority of voters
// acknowledged.
func (c *Core) readAckedRound() uint64 {
	return quorumIndex(c.config().Voters(), func(id NodeID) uint64 {
		if id == c.id {
			return c.reads.seq
		}
		if pr := c.prs[id]; pr != nil {
			return pr.readAck
		}
		return 0
	})
}

// leaseValid reports whether the leader may serve a read without a
// heartbeat round (Config.LeaseRead). A majority acknowledged a round sent
// at tick t; with check-quorum none of them votes for another candidate
// before t + ElectionTicks on its own clock, so no other leader can exist
// before then, less a margin for clock drift between nodes.
func (c *Core) leaseValid() bool {
	if !c.cfg.LeaseRead || c.role != Leader || c.leadTransferee != None || !c.committedInTerm() {
		return false
	}
	acked := c.readAckedRound()
	if acked == 0 || acked+leaseRounds <= c.reads.seq {
		return false
	}
	sent := c.reads.sentAt[acked%leaseRounds]
	if sent < c.reads.leaseFloor {
		return false
	}
	return c.ticks < sent+uint64(c.cfg.ElectionTicks-leaseDriftTicks(c.cfg.ElectionTicks))
}

// leaseDriftTicks is the part of the election timeout a lease gives up to
// cover clock drift between nodes: a fifth, at least one tick.
func leaseDriftTicks(election int) int { return max(1, election/5) }

// advanceReads answers every pending read whose heartbeat round a majority
// acknowledged, once an entry of this term has committed (so the commit
// index covers everything any earlier leader committed).
func (c *Core) advanceReads() {
	if c.role != Leader || len(c.reads.pending) == 0 || !c.committedInTerm() {
		return
	}
	acked := c.readAckedRound()
	n := 0
	for _, p := range c.reads.pending {
		if p.seq > acked {
			break
		}
		c.answerRead(p, c.log.committed)
		n++
	}
	c.reads.pending = append(c.reads.pending[:0], c.reads.pending[n:]...)
}

// answerRead delivers a read index (0 = failed) locally or to the follower
// that asked.
func (c *Core) answerRead(p pendingRead, index uint64) {
	if p.from == None || p.from == c.id {
		c.readStates = append(c.readStates, ReadState{Index: index, Context: p.ctx})
		return
	}
	// Tell the follower what it may commit now, so it can reach the read
	// index without waiting for the next heartbeat.
	var commit uint64
	if pr := c.prs[p.from]; pr != nil {
		commit = min(pr.match, c.log.committed)
	}
	c.send(Message{To: p.from, Type: MsgReadIndexResp, Index: index, Commit: commit, Context: p.ctx, Reject: index == 0})
}

// failReads answers every pending read with a failure; called when the
// leader steps down.
func (c *Core) failReads() {
	for _, p := range c.reads.pending {
		c.answerRead(p, 0)
	}
	c.reads.reset()
}
