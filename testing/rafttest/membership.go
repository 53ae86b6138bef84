package rafttest

import (
	"errors"

	"github.com/raftgo/raft"
)

// Limits the simulator keeps when it carries out membership faults, so
// that a quorum of the configuration can always be up after the heal.
const (
	minVoters = 3
	maxVoters = 7
)

// confRequest is the membership fault being carried out.
type confRequest struct {
	f Fault
	// target is the node the change is about: f.Node, or for a
	// leader-aimed removal the node that led at the first try.
	target   raft.NodeID
	deadline int
	tried    bool
}

// reconfigure carries the membership faults forward, one at a time: it
// proposes the current one on the leader until the committed
// configuration reflects it. The Core refuses a change while another is
// uncommitted (raft.ErrConfChangePending) and before a new leader has
// committed an entry of its term; both are retried on a later tick.
func (c *cluster) reconfigure() {
	if c.confReq == nil {
		if len(c.confQueue) == 0 {
			return
		}
		f := c.confQueue[0]
		c.confQueue = c.confQueue[1:]
		c.confReq = &confRequest{f: f, deadline: c.tick + 40*c.opts.ElectionTicks}
		if !f.Leader {
			c.confReq.target = f.Node
		}
	}
	rq := c.confReq
	if int(rq.target) >= len(c.nodes) {
		c.dropConf(rq, "no such node")
		return
	}
	if !rq.tried && rq.f.Kind == FaultRemove && !rq.f.Leader {
		if _, ok := c.chk.conf.Server(rq.target); !ok {
			c.dropConf(rq, "not a member")
			return
		}
	}
	rq.tried = true
	if rq.target != raft.None && c.committed(rq) {
		c.confDone(rq)
		return
	}
	if c.tick > rq.deadline {
		c.dropConf(rq, "not committed in time")
		return
	}
	l := c.leaderOr(nil)
	if l == nil {
		return
	}
	if rq.target == raft.None {
		rq.target = l.id
	}
	conf := l.core.Config()
	if satisfied(rq, conf) {
		return // proposed: waiting for it to commit
	}
	if why := c.forbidden(rq, conf); why != "" {
		c.dropConf(rq, why)
		return
	}
	cc := raft.ConfChange{ID: rq.target}
	switch rq.f.Kind {
	case FaultAddLearner:
		cc.Type = raft.AddLearner
	case FaultAddVoter:
		cc.Type = raft.AddVoter
	default:
		cc.Type = raft.RemoveServer
	}
	if cc.Type == raft.AddVoter && !c.caughtUp(l, rq.target) {
		return // promote a learner once it has caught up, as raft.Node.AddVoter does
	}
	if n := c.nodes[rq.target]; cc.Type != raft.RemoveServer && !n.started {
		c.startFresh(n)
		if c.err != nil {
			return
		}
	}
	idx, err := l.core.ProposeConfChange(cc)
	if err != nil {
		// Not ready yet, a change pending, or a transfer under way:
		// try again on a later tick. The simulator only proposes
		// changes that make sense, so any other refusal must come
		// before the leader has committed an entry of its term.
		if c.tracing {
			c.tracef("n%d refuses %v n%d: %v", l.id, cc.Type, cc.ID, err)
		}
		var nl *raft.NotLeaderError
		if !errors.Is(err, raft.ErrConfChangePending) && !errors.Is(err, raft.ErrProposalDropped) && !errors.As(err, &nl) {
			if t, _, _ := l.log.at(l.commit); t == l.core.Term() {
				c.violate("membership", "leader n%d has committed an entry of its term %d but refuses %v n%d: %v", l.id, t, cc.Type, cc.ID, err)
			}
		}
		return
	}
	if c.tracing {
		c.tracef("n%d proposes %v n%d at index %d", l.id, cc.Type, cc.ID, idx)
	}
	c.settle(l)
}

// committed reports whether rq's change has committed. For a removal that
// means the committed configuration dropped the node: a target whose own
// addition has not committed yet is not removed by its absence.
func (c *cluster) committed(rq *confRequest) bool {
	if rq.f.Kind == FaultRemove {
		return c.nodes[rq.target].removed
	}
	return satisfied(rq, c.chk.conf)
}

// caughtUp reports whether id is not a learner of leader l's
// configuration, or one that holds l's committed entries.
func (c *cluster) caughtUp(l *simNode, id raft.NodeID) bool {
	if s, ok := l.core.Config().Server(id); !ok || s.Suffrage != raft.Learner {
		return true
	}
	st := l.core.Status()
	return st.Progress[id].Match >= st.Commit
}

// retireRemoved stops, at the heal, every removed node still running (and
// keeps down every removed node that is down) when
// neither pre-vote nor check-quorum is on: a removed node that missed its
// removal still believes it is a voter, and without either its vote
// requests depose leaders for as long as it runs (operators must shut
// removed servers down in that configuration).
func (c *cluster) retireRemoved() {
	if c.opts.PreVote || c.opts.CheckQuorum {
		return
	}
	for _, n := range c.nodes[1:] {
		switch {
		case n.removed && n.up:
			c.retire(n, 0)
		case n.removed:
			n.retired = true // not restarted by the heal
		}
	}
}

// satisfied reports whether conf reflects rq's change.
func satisfied(rq *confRequest, conf raft.Configuration) bool {
	s, ok := conf.Server(rq.target)
	switch rq.f.Kind {
	case FaultAddLearner:
		return ok
	case FaultAddVoter:
		return ok && s.Suffrage == raft.Voter
	}
	return !ok
}

// forbidden says why rq's change must not be made to conf, if it must
// not: it would leave fewer than minVoters voters or more than maxVoters,
// grow the cluster more than two members beyond its initial size (which
// only costs simulation time), or add back a removed ID.
func (c *cluster) forbidden(rq *confRequest, conf raft.Configuration) string {
	voters := len(conf.Voters())
	if rq.f.Kind == FaultRemove {
		if conf.IsVoter(rq.target) && voters-1 < minVoters {
			return "it would leave fewer than three voters"
		}
		return ""
	}
	if c.nodes[rq.target].removed {
		return "the ID was removed before"
	}
	_, member := conf.Server(rq.target)
	if !member && len(conf.Servers)+1 > c.opts.Nodes+2 {
		return "it would make more than two members beyond the initial size"
	}
	if rq.f.Kind == FaultAddVoter && voters+1 > maxVoters {
		return "it would make more than seven voters"
	}
	return ""
}

func (c *cluster) confDone(rq *confRequest) {
	c.confReq = nil
	c.stats.ConfChanges++
	if c.tracing {
		c.tracef("membership %v done", rq.f)
	}
	if rq.f.Kind == FaultRemove && rq.f.Retire {
		c.retire(c.nodes[rq.target], rq.f.For)
	}
}

func (c *cluster) dropConf(rq *confRequest, why string) {
	c.confReq = nil
	c.stats.ConfDropped++
	if c.tracing {
		c.tracef("membership %v dropped: %s", rq.f, why)
	}
}

// startFresh starts a node that has never run: empty storage and no
// configuration (raft.Config.Peers empty), waiting for a leader to
// contact it.
func (c *cluster) startFresh(n *simNode) {
	n.started = true
	n.st = raft.NewMemoryStorage()
	n.phase = c.rng.IntN(SubTicks)
	if c.tracing {
		c.tracef("n%d starts fresh, with no configuration", n.id)
	}
	if err := c.start(n); err != nil {
		c.violate("storage", "%v", err)
		return
	}
	c.settle(n)
}

// retire stops n, whose removal has committed, and restarts it from its
// storage after restartAfter ticks if that is positive.
func (c *cluster) retire(n *simNode, restartAfter int) {
	c.stats.Retired++
	if c.tracing {
		c.tracef("n%d retires", n.id)
	}
	if n.up {
		c.stop(n, 0)
	}
	n.retired = true
	if restartAfter > 0 {
		c.recoveries = append(c.recoveries, recovery{tick: c.tick + restartAfter, node: n.id, restart: true, unretire: true})
	}
}

// members returns the nodes of the committed configuration.
func (c *cluster) members() []*simNode {
	ms := make([]*simNode, 0, len(c.chk.conf.Servers))
	for _, s := range c.chk.conf.Servers {
		if int(s.ID) < len(c.nodes) {
			ms = append(ms, c.nodes[s.ID])
		}
	}
	return ms
}

// noteRemovals marks the nodes that next drops from the committed
// configuration: their IDs are never added again.
func (c *cluster) noteRemovals(next raft.Configuration) {
	for _, s := range c.chk.conf.Servers {
		if _, ok := next.Server(s.ID); !ok && int(s.ID) < len(c.nodes) {
			c.nodes[s.ID].removed = true
		}
	}
}
