package raft

// contextTransfer marks a vote request of an election forced by leadership
// transfer: receivers grant it even while they hear from a leader.
const contextTransfer = 1

type campaignKind uint8

const (
	campaignPreElection campaignKind = iota
	campaignElection
	campaignTransfer
)

// tickElection is the tick function of followers and candidates: when the
// randomized election timeout passes without word from a leader, campaign.
func (c *Core) tickElection() {
	c.ticks++
	c.electionElapsed++
	if (c.role == Candidate || c.role == PreCandidate) && c.electionElapsed%c.cfg.HeartbeatTicks == 0 {
		// Ask again whoever has not answered: under heavy message loss
		// one round of requests rarely reaches a majority.
		c.requestVotes(true)
	}
	if c.electionElapsed >= c.randomizedTimeout && c.promotable() {
		c.electionElapsed = 0
		if c.cfg.PreVote {
			c.campaign(campaignPreElection)
		} else {
			c.campaign(campaignElection)
		}
	}
}

// Campaign starts an election now, as if the election timeout had passed
// (with pre-vote first when configured). It does nothing on a leader or a
// node that is not a voter.
func (c *Core) Campaign() {
	if c.role == Leader || !c.promotable() {
		return
	}
	if c.cfg.PreVote {
		c.campaign(campaignPreElection)
	} else {
		c.campaign(campaignElection)
	}
}

func (c *Core) campaign(kind campaignKind) {
	if !c.promotable() {
		return
	}
	if kind == campaignPreElection {
		c.becomePreCandidate()
	} else {
		c.becomeCandidate()
	}
	c.votes[c.id] = true
	if countVotes(c.config().Voters(), c.votes) == VoteWon {
		// A single-voter cluster wins at once.
		c.electionWon()
		return
	}
	c.campaignCtx = 0
	if kind == campaignTransfer {
		c.campaignCtx = contextTransfer
	}
	c.requestVotes(false)
	c.logger.Debug("campaigning", "kind", kind, "term", c.term)
}

// requestVotes sends this campaign's vote requests to every other voter, or
// with onlyMissing to those that have not answered yet.
func (c *Core) requestVotes(onlyMissing bool) {
	typ, term := MsgVote, c.term
	if c.role == PreCandidate {
		typ, term = MsgPreVote, c.term+1
	}
	for _, id := range c.config().Voters() {
		if _, answered := c.votes[id]; id == c.id || (onlyMissing && answered) {
			continue
		}
		c.send(Message{To: id, Type: typ, Term: term, Index: c.log.lastIndex(), LogTerm: c.log.lastTerm(), Context: c.campaignCtx})
	}
}

func (c *Core) becomePreCandidate() {
	// A pre-candidate changes neither term nor vote.
	c.resetTimers()
	c.votes = make(map[NodeID]bool)
	c.prs = nil
	c.lead = None
	c.role = PreCandidate
	c.step, c.tick = c.stepCandidate, c.tickElection
}

func (c *Core) becomeCandidate() {
	c.reset(c.term + 1)
	c.vote = c.id
	c.votes = make(map[NodeID]bool)
	c.role = Candidate
	c.step, c.tick = c.stepCandidate, c.tickElection
	c.logger.Info("became candidate", "term", c.term)
}

// electionWon moves a pre-candidate on to a real election and a candidate
// to leadership.
func (c *Core) electionWon() {
	if c.role == PreCandidate {
		c.campaign(campaignElection)
		return
	}
	c.becomeLeader()
}

// handleVoteRequest answers MsgVote and MsgPreVote (any role). m.Term is at
// least our term here, or higher for a pre-vote that left our term alone.
func (c *Core) handleVoteRequest(m Message) {
	resp := MsgVoteResp
	if m.Type == MsgPreVote {
		resp = MsgPreVoteResp
	}
	canVote := c.vote == m.From ||
		(c.vote == None && c.lead == None) ||
		(m.Type == MsgPreVote && m.Term > c.term)
	upToDate := c.log.isUpToDate(m.Index, m.LogTerm) || c.mutations.VoteWithoutLogCheck
	if canVote && upToDate {
		if m.Type == MsgVote {
			c.vote = m.From
			c.electionElapsed = 0
		}
		c.send(Message{To: m.From, Type: resp, Term: m.Term})
		return
	}
	c.send(Message{To: m.From, Type: resp, Reject: true})
}

// stepCandidate handles messages for pre-candidates and candidates.
func (c *Core) stepCandidate(m Message) {
	myResp := MsgVoteResp
	if c.role == PreCandidate {
		myResp = MsgPreVoteResp
	}
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgSnap:
		// A leader exists for this term.
		c.becomeFollower(m.Term, m.From)
		c.stepFollower(m)
	case myResp:
		c.votes[m.From] = !m.Reject
		switch countVotes(c.config().Voters(), c.votes) {
		case VoteWon:
			c.electionWon()
		case VoteLost:
			c.becomeFollower(c.term, None)
		}
	case MsgReadIndex:
		c.send(Message{To: m.From, Type: MsgReadIndexResp, Reject: true, Context: m.Context})
	}
}

// TransferLeadership starts handing leadership to the voter to: the leader
// stops accepting proposals, brings to's log up to date, then tells it to
// campaign at once. The transfer is abandoned after an election timeout.
func (c *Core) TransferLeadership(to NodeID) error {
	if c.role != Leader {
		return &NotLeaderError{Leader: c.lead}
	}
	if to == c.id {
		return nil
	}
	if !c.config().IsVoter(to) {
		return &TransferError{To: to, Reason: "not a voter"}
	}
	c.leadTransferee = to
	c.electionElapsed = 0
	c.reads.leaseFloor = c.ticks + 1
	pr := c.prs[to]
	if pr.match == c.log.lastIndex() {
		c.send(Message{To: to, Type: MsgTimeoutNow})
	} else {
		c.sendAppend(to)
	}
	return nil
}
