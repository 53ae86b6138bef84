package raft

func (c *Core) becomeLeader() {
	c.reset(c.term)
	c.role, c.lead = Leader, c.id
	c.step, c.tick = c.stepLeader, c.tickHeartbeat
	c.prs = make(map[NodeID]*progress, len(c.config().Servers))
	for _, s := range c.config().Servers {
		c.prs[s.ID] = c.newProgress()
	}
	self := c.prs[c.id]
	self.match = c.log.stable
	self.becomeReplicate()
	self.next = c.log.lastIndex() + 1
	// Commit entries of earlier terms by committing one of ours (Raft
	// paper, section 5.4.2; dissertation section 3.6.2).
	c.log.append(Entry{Index: c.log.lastIndex() + 1, Term: c.term, Type: EntryNoop})
	c.uncommitted, c.uncommittedMark = 0, c.log.lastIndex()
	// No membership change until an entry of this term commits.
	c.pendingConfIndex = c.log.lastIndex()
	c.logger.Info("became leader", "term", c.term, "lastIndex", c.log.lastIndex())
	c.bcastAppend()
}

// tickHeartbeat is the leader's tick function.
func (c *Core) tickHeartbeat() {
	c.ticks++
	c.heartbeatElapsed++
	c.electionElapsed++
	for id, pr := range c.prs {
		pr.stateTicks++
		if id != c.id && pr.state == StateSnapshot && pr.stateTicks >= 2*c.cfg.ElectionTicks {
			// The snapshot or its answer was lost: try again.
			pr.becomeProbe()
		}
	}
	if c.electionElapsed >= c.cfg.ElectionTicks {
		c.electionElapsed = 0
		if c.cfg.CheckQuorum && !c.checkQuorumActive() {
			c.logger.Info("stepping down: no quorum heard from in an election timeout", "term", c.term)
			c.becomeFollower(c.term, None)
			return
		}
		if c.leadTransferee != None {
			c.logger.Info("leadership transfer timed out", "to", uint64(c.leadTransferee))
			c.leadTransferee = None
		}
	}
	if c.heartbeatElapsed >= c.cfg.HeartbeatTicks {
		c.heartbeatElapsed = 0
		c.bcastHeartbeat()
	}
}

// checkQuorumActive reports whether a majority of voters was heard from
// since the last call, and starts a new round.
func (c *Core) checkQuorumActive() bool {
	active := 0
	voters := c.config().Voters()
	for _, id := range voters {
		if pr := c.prs[id]; id == c.id || (pr != nil && pr.recentActive) {
			active++
		}
	}
	for id, pr := range c.prs {
		if id != c.id {
			pr.recentActive = false
		}
	}
	return active >= len(voters)/2+1
}

// stepLeader handles messages for the leader.
func (c *Core) stepLeader(m Message) {
	pr := c.prs[m.From]
	switch m.Type {
	case MsgAppResp:
		if pr != nil {
			pr.recentActive = true
			c.handleAppResp(m, pr)
		}
	case MsgHeartbeatResp:
		if pr != nil {
			pr.recentActive = true
			c.handleHeartbeatResp(m, pr)
		}
	case MsgReadIndex:
		c.readIndex(m.From, m.Context)
	}
}

func (c *Core) handleAppResp(m Message, pr *progress) {
	if m.Reject {
		// The follower's log does not hold the entry before what we sent.
		// Use its hint to skip a whole term at a time.
		hint := m.RejectHint
		if m.LogTerm > 0 {
			if x := c.log.lastIndexOfTerm(m.LogTerm, m.Index); x > 0 {
				hint = x + 1
			}
		}
		if pr.maybeDecrTo(m.Index, hint) {
			if pr.state == StateReplicate {
				pr.becomeProbe()
				pr.next = max(pr.match+1, min(hint, m.Index))
			}
			c.sendAppend(m.From)
		}
		return
	}
	acked := m.Index
	if c.mutations.MatchFromNext && pr.next > 0 {
		acked = max(acked, pr.next-1)
	}
	wasPaused := pr.isPaused()
	if pr.maybeUpdate(acked) {
		switch pr.state {
		case StateProbe:
			pr.becomeReplicate()
		case StateSnapshot:
			if pr.match >= pr.pendingSnapshot {
				pr.becomeReplicate()
			}
		case StateReplicate:
			pr.inflight.freeTo(acked)
		}
		switch {
		case c.maybeCommit():
			c.bcastEntries()
		case wasPaused:
			c.sendAppendLoop(m.From)
		case pr.state == StateReplicate:
			// Only new entries: an empty append here would carry
			// nothing but the commit index, to the one follower that
			// did not advance it (one extra round trip per proposal);
			// like the others, it learns it from the next append or
			// heartbeat.
			c.sendEntriesLoop(m.From)
		}
		if m.From == c.leadTransferee && pr.match == c.log.lastIndex() {
			c.send(Message{To: m.From, Type: MsgTimeoutNow})
		}
	} else if pr.state == StateReplicate {
		pr.inflight.freeTo(acked)
	}
}

func (c *Core) handleHeartbeatResp(m Message, pr *progress) {
	pr.probeSent = false
	if m.Context > pr.readAck {
		pr.readAck = m.Context
		c.advanceReads()
	}
	if pr.state == StateReplicate && pr.inflight.full() {
		// Make room so a lost append is noticed (the follower will
		// reject the next one and we fall back to probing).
		pr.inflight.freeFirst()
	}
	if pr.match < c.log.lastIndex() {
		c.maybeSendAppend(m.From, true)
	}
}

// maybeCommit advances the commit index to the highest index replicated on
// a majority of voters, counting only entries of the current term (Raft
// paper, section 5.4.2: the Figure 8 case). It reports whether it moved.
func (c *Core) maybeCommit() bool {
	idx := quorumIndex(c.config().Voters(), func(id NodeID) uint64 {
		if pr := c.prs[id]; pr != nil {
			return pr.match
		}
		return 0
	})
	if idx <= c.log.committed {
		return false
	}
	if t, _ := c.log.term(idx); t != c.term && !c.mutations.CommitPreviousTerm {
		return false
	}
	if !c.log.commitTo(idx) {
		return false
	}
	c.releaseUncommitted()
	c.advanceReads()
	if !c.promotable() && c.confs.latest().index <= c.log.committed {
		// Our removal has committed: tell the others, hand leadership to
		// the most up-to-date voter so nobody waits for a timeout, then
		// step down (dissertation section 4.2.2).
		c.bcastAppend()
		if heir := c.mostCaughtUpVoter(); heir != None {
			c.send(Message{To: heir, Type: MsgTimeoutNow})
		}
		c.logger.Info("stepping down: removed from the configuration", "term", c.term)
		c.becomeFollower(c.term, None)
		return false
	}
	return true
}

// mostCaughtUpVoter returns the voter (other than us) with the highest
// match index, if it holds our whole log; otherwise None.
func (c *Core) mostCaughtUpVoter() NodeID {
	best, bestMatch := None, uint64(0)
	for _, id := range c.config().Voters() {
		if pr := c.prs[id]; id != c.id && pr != nil && (pr.match > bestMatch || (pr.match == bestMatch && id < best)) {
			best, bestMatch = id, pr.match
		}
	}
	if bestMatch < c.log.lastIndex() {
		return None
	}
	return best
}

// forEachFollower calls fn for every other member with progress, in
// configuration order (never map order: a seeded run must produce its
// messages in the same order every time).
func (c *Core) forEachFollower(fn func(id NodeID, pr *progress)) {
	for _, s := range c.config().Servers {
		if pr := c.prs[s.ID]; s.ID != c.id && pr != nil {
			fn(s.ID, pr)
		}
	}
}

// bcastAppend sends every follower what it is missing.
func (c *Core) bcastAppend() {
	c.forEachFollower(func(id NodeID, _ *progress) { c.sendAppendLoop(id) })
}

// sendAppendLoop sends as many appends to id as flow control allows; at
// least one (possibly empty, to carry the commit index) if not paused.
func (c *Core) sendAppendLoop(id NodeID) {
	if !c.maybeSendAppend(id, true) {
		return
	}
	c.sendEntriesLoop(id)
}

// sendEntriesLoop sends id every new entry flow control allows, and no
// empty append.
func (c *Core) sendEntriesLoop(id NodeID) {
	for c.prs[id] != nil && c.maybeSendAppend(id, false) && c.prs[id].state == StateReplicate {
	}
}

// bcastEntries sends every follower its new entries, if any. A commit
// alone is not broadcast: followers learn it from the next append or
// heartbeat, which halves the messages per proposal; the leader applies,
// and answers clients, without waiting for that.
func (c *Core) bcastEntries() {
	c.forEachFollower(func(id NodeID, _ *progress) { c.sendEntriesLoop(id) })
}

// sendAppend sends one append (or a snapshot) to id if flow control allows.
func (c *Core) sendAppend(id NodeID) { c.maybeSendAppend(id, true) }

// maybeSendAppend sends id the entries after its next index, or a snapshot
// if they are compacted. With sendIfEmpty false it sends nothing when there
// are no new entries. It reports whether it sent a message.
func (c *Core) maybeSendAppend(id NodeID, sendIfEmpty bool) bool {
	pr := c.prs[id]
	if pr == nil || pr.isPaused() {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, ok := c.log.term(prevIndex)
	if !ok {
		return c.sendSnapshot(id, pr)
	}
	ents := c.log.slice(pr.next, c.log.lastIndex()+1, c.cfg.MaxSizePerMsg)
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	c.send(Message{To: id, Type: MsgApp, Index: prevIndex, LogTerm: prevTerm, Entries: ents, Commit: c.log.committed})
	if n := len(ents); n > 0 {
		bytes := 0
		for i := range ents {
			bytes += len(ents[i].Data)
		}
		pr.sentEntries(n, ents[n-1].Index, bytes)
	} else {
		pr.sentEntries(0, prevIndex, 0)
	}
	return true
}

func (c *Core) sendSnapshot(id NodeID, pr *progress) bool {
	if c.snap.Index == 0 || c.snap.Index < c.log.offset {
		c.logger.Warn("cannot send snapshot: none durable covers the compacted log", "to", uint64(id))
		return false
	}
	c.send(Message{To: id, Type: MsgSnap, Snapshot: c.snap})
	pr.becomeSnapshot(c.snap.Index)
	c.logger.Info("sending snapshot", "to", uint64(id), "index", c.snap.Index)
	return true
}

// bcastHeartbeat sends a heartbeat round; each round has a new sequence
// number, which followers echo so reads and leases can count acks.
func (c *Core) bcastHeartbeat() {
	c.reads.seq++
	c.reads.sentAt[c.reads.seq%leaseRounds] = c.ticks
	c.forEachFollower(func(id NodeID, pr *progress) {
		c.send(Message{To: id, Type: MsgHeartbeat, Commit: min(pr.match, c.log.committed), Context: c.reads.seq})
	})
}

// stepFollower handles messages for followers.
func (c *Core) stepFollower(m Message) {
	switch m.Type {
	case MsgApp:
		c.electionElapsed, c.lead = 0, m.From
		c.handleAppend(m)
	case MsgHeartbeat:
		c.electionElapsed, c.lead = 0, m.From
		c.log.commitTo(m.Commit)
		c.send(Message{To: m.From, Type: MsgHeartbeatResp, Context: m.Context})
	case MsgSnap:
		c.electionElapsed, c.lead = 0, m.From
		c.handleSnapshot(m)
	case MsgTimeoutNow:
		c.logger.Info("leadership transfer: campaigning now", "from", uint64(m.From))
		c.campaign(campaignTransfer)
	case MsgReadIndex:
		// Reads are forwarded one hop only.
		c.send(Message{To: m.From, Type: MsgReadIndexResp, Reject: true, Context: m.Context})
	case MsgReadIndexResp:
		c.log.commitTo(m.Commit)
		index := m.Index
		if m.Reject {
			index = 0
		}
		c.readStates = append(c.readStates, ReadState{Index: index, Context: m.Context})
	}
}

// handleAppend is the follower's side of AppendEntries (Raft paper,
// Figure 2, receiver implementation).
func (c *Core) handleAppend(m Message) {
	prevIndex, prevTerm, ents := m.Index, m.LogTerm, m.Entries
	if prevIndex < c.log.committed {
		// Entries up to our commit index already match the leader's
		// (leader completeness); skip them.
		skip := c.log.committed - prevIndex
		if uint64(len(ents)) <= skip {
			c.send(Message{To: m.From, Type: MsgAppResp, Index: c.log.committed})
			return
		}
		ents = ents[skip:]
		prevIndex = c.log.committed
		prevTerm, _ = c.log.term(prevIndex)
	}
	if !c.log.matchTerm(prevIndex, prevTerm) {
		hintIndex, hintTerm := c.log.conflictHint(prevIndex)
		c.send(Message{To: m.From, Type: MsgAppResp, Reject: true, Index: m.Index, RejectHint: hintIndex, LogTerm: hintTerm})
		return
	}
	lastNew := prevIndex + uint64(len(ents))
	if ci := c.log.findConflict(ents); ci != 0 {
		if ci <= c.log.committed {
			c.logger.Error("leader sent an entry conflicting with a committed one; ignoring", "index", ci, "commit", c.log.committed)
			return
		}
		from := ci - ents[0].Index
		if c.mutations.NoTruncate && ci <= c.log.lastIndex() {
			from = min(uint64(len(ents)), c.log.lastIndex()+1-ents[0].Index)
		} else {
			c.log.truncateFrom(ci)
			c.confs.truncate(ci)
		}
		c.appendFollower(ents[from:])
	}
	c.log.commitTo(min(m.Commit, lastNew))
	c.send(Message{To: m.From, Type: MsgAppResp, Index: lastNew})
}

// appendFollower appends entries from the leader and puts any configuration
// they carry in force.
func (c *Core) appendFollower(ents []Entry) {
	if len(ents) == 0 {
		return
	}
	c.log.append(ents...)
	for i := range ents {
		if ents[i].Type != EntryConfig {
			continue
		}
		conf, err := DecodeConfiguration(ents[i].Data)
		if err != nil {
			c.logger.Error("undecodable configuration entry; keeping the previous configuration", "index", ents[i].Index, "err", err)
			continue
		}
		c.setConfig(ents[i].Index, conf)
	}
}

func (c *Core) handleSnapshot(m Message) {
	if c.restoreSnapshot(m.Snapshot, m.SnapshotData) {
		c.send(Message{To: m.From, Type: MsgAppResp, Index: c.log.lastIndex()})
		return
	}
	c.send(Message{To: m.From, Type: MsgAppResp, Index: c.log.committed})
}
