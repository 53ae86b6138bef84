package rafttest

import (
	"bytes"
	"math"
	"slices"

	"github.com/raftgo/raft"
)

// liveness follows the proposal that proves the healed cluster works.
type liveness struct {
	node        raft.NodeID
	index, term uint64
	doneTick    int // 0 while not committed
}

// chainOf returns the chain hash of the entry (index, term), which some
// log must have held.
func (c *cluster) chainOf(n *simNode, index, term uint64) uint64 {
	if index == 0 {
		return 0
	}
	ch, ok := c.chk.chains[entryID{index, term}]
	if !ok {
		c.violate("log matching", "n%d starts from (index %d, term %d), an entry no log ever held", n.id, index, term)
	}
	return ch
}

// appendMirror adds e to n's log mirror and checks log matching: an entry
// with the same index and term must sit on the same history in every log.
func (c *cluster) appendMirror(n *simNode, e *raft.Entry) {
	if e.Index != n.log.last()+1 {
		c.violate("log matching", "n%d: entry %d does not follow its last index %d", n.id, e.Index, n.log.last())
		return
	}
	_, prev, _ := n.log.at(e.Index - 1)
	ch := chainHash(prev, e)
	id := entryID{e.Index, e.Term}
	if old, ok := c.chk.chains[id]; !ok {
		c.chk.chains[id] = ch
	} else if old != ch {
		c.violate("log matching", "n%d holds entry (index %d, term %d) on a different history than another log", n.id, e.Index, e.Term)
		return
	}
	n.log.ents = append(n.log.ents, mirrorEntry{term: e.Term, chain: ch})
	if e.Type == raft.EntryConfig {
		if _, ok := c.chk.configs[id]; !ok {
			conf, err := raft.DecodeConfiguration(e.Data)
			if err != nil {
				c.violate("membership", "n%d holds an undecodable configuration entry at index %d: %v", n.id, e.Index, err)
				return
			}
			c.chk.configs[id] = conf
		}
	}
}

// recordCommit checks a move of n's commit index to commit and records
// newly committed entries.
func (c *cluster) recordCommit(n *simNode, commit uint64) {
	if commit < n.commit {
		c.violate("commit monotonicity", "n%d's commit index moved back from %d to %d", n.id, n.commit, commit)
		return
	}
	if commit > n.log.last() {
		c.violate("log matching", "n%d commits index %d beyond its last entry %d", n.id, commit, n.log.last())
		return
	}
	from := max(n.commit+1, n.log.offset)
	n.commit = commit
	k := c.chk
	if l, ok := k.leaders[n.core.Term()]; ok && l == (leadership{n.id, n.incarnation}) {
		c.checkCommitQuorum(n, commit)
		if c.err != nil {
			return
		}
	}
	for i := from; i <= commit; i++ {
		t, ch, _ := n.log.at(i)
		if i <= k.commitMax() {
			if ce := k.committed[i]; ce.term != 0 && ce.chain != ch {
				c.violate("state machine safety", "n%d commits (index %d, term %d) but (index %d, term %d) was committed before, with a different history", n.id, i, t, i, ce.term)
				return
			}
			continue
		}
		// i == commitMax()+1, except just after a snapshot install,
		// where earlier indexes are covered by the check at i.
		for k.commitMax() < i-1 {
			k.committed = append(k.committed, committedEntry{})
		}
		k.committed = append(k.committed, committedEntry{term: t, chain: ch})
		if conf, ok := k.configs[entryID{i, t}]; ok {
			c.noteRemovals(conf)
			k.conf, k.confIndex = conf, i
			if c.tracing {
				c.tracef("configuration %v committed at %d", conf.Servers, i)
			}
		}
		term := n.core.Term()
		if s := len(k.segments); s > 0 && k.segments[s-1].commitTerm == term {
			k.segments[s-1].last = i
		} else {
			k.segments = append(k.segments, commitSegment{last: i, commitTerm: term})
		}
	}
}

// checkNode checks the invariants that involve n after an event on it.
func (c *cluster) checkNode(n *simNode) {
	role, term := n.core.Role(), n.core.Term()
	if role != n.role || term != n.term {
		if c.tracing {
			c.tracef("n%d becomes %s term=%d", n.id, role, term)
		}
		n.role, n.term = role, term
		c.stats.MaxTerm = max(c.stats.MaxTerm, term)
	}
	if role != raft.Leader {
		return
	}
	me := leadership{n.id, n.incarnation}
	if l, ok := c.chk.leaders[term]; !ok {
		c.chk.leaders[term] = me
	} else if l.node != n.id {
		c.violate("election safety", "term %d has two leaders: n%d and n%d", term, l.node, n.id)
		return
	} else if l != me {
		c.violate("election safety", "n%d leads term %d twice, before and after a restart", n.id, term)
		return
	}
	c.checkLeaderComplete(n)
}

// checkCommitQuorum checks that the entry leader n commits at index is
// durable on a majority of the voters of n's configuration in force, the
// latest in its log (Raft dissertation, section 4.1): followers
// acknowledge only what they have persisted, and the leader counts itself
// once its own write is durable. A leader that counted a learner, a
// removed server or an old configuration's voters, or an acknowledgement
// of an unpersisted entry, fails here.
func (c *cluster) checkCommitQuorum(n *simNode, index uint64) {
	t, _, ok := n.log.at(index)
	if !ok || index == 0 {
		return
	}
	voters := n.core.Config().Voters()
	held := 0
	for _, id := range voters {
		if int(id) < len(c.nodes) && c.nodes[id].disk.holds(index, t) {
			held++
		}
	}
	if len(voters) > 0 && held < len(voters)/2+1 {
		c.violate("commit quorum", "leader n%d of term %d commits (index %d, term %d), durable on only %d of its voters %v", n.id, n.core.Term(), index, t, held, voters)
	}
}

// checkLeaderComplete checks that leader n holds every entry committed in
// an earlier term.
func (c *cluster) checkLeaderComplete(n *simNode) {
	term, cm := n.core.Term(), c.chk.commitMax()
	if n.checkedTerm == term && n.checkedCommit == cm {
		return
	}
	n.checkedTerm, n.checkedCommit = term, cm
	i := c.chk.lastCommittedBefore(term)
	if i == 0 {
		return
	}
	if i > n.log.last() {
		c.violate("leader completeness", "leader n%d of term %d lacks committed index %d (its log ends at %d)", n.id, term, i, n.log.last())
		return
	}
	i = max(i, n.log.offset)
	ce := c.chk.committed[i]
	if _, ch, _ := n.log.at(i); ce.term != 0 && ch != ce.chain {
		c.violate("leader completeness", "leader n%d of term %d holds a different entry at committed index %d (committed term %d)", n.id, term, i, ce.term)
	}
}

func (c *cluster) checkSnapshotBytes(n *simNode, index uint64, data []byte) {
	h := hashBytes(data)
	if old, ok := c.chk.snaps[index]; !ok {
		c.chk.snaps[index] = h
	} else if old != h {
		c.violate("determinism", "n%d's snapshot at index %d differs from another replica's snapshot at the same index", n.id, index)
	}
}

// driveLiveness proposes a command on the leader, once per leadership, and
// notes when one commits.
func (c *cluster) driveLiveness() {
	lv := &c.live
	if lv.index != 0 && lv.index <= c.chk.commitMax() {
		if c.chk.committed[lv.index].term == lv.term {
			lv.doneTick = c.tick
			if c.tracing {
				c.tracef("liveness: proposal (%d, %d) committed", lv.index, lv.term)
			}
			return
		}
	}
	for _, n := range c.nodes[1:] {
		// The probe goes to a leader that is a voter of the committed
		// configuration, not to one whose removal is pending.
		if !n.up || n.core.Role() != raft.Leader || !c.chk.conf.IsVoter(n.id) {
			continue
		}
		if n.id == lv.node && n.core.Term() == lv.term {
			return
		}
		cmd := c.opts.Workload.Command(c.rng)
		idx, err := n.core.Propose(cmd)
		if err != nil {
			continue
		}
		lv.node, lv.index, lv.term = n.id, idx, n.core.Term()
		// It is a client request too, by one more client, whose outcome
		// nobody waits for.
		c.history = append(c.history, Op{Client: len(c.clients), Input: cmd, Call: c.nextStamp(), Return: math.MaxInt64, Unknown: true, Node: n.id, Index: idx})
		c.settle(n)
		return
	}
}

// converged reports whether every member of the committed configuration
// applied the same, highest commit index with nothing left to write.
// Nodes outside it (removed, or fresh ones never added) are left out.
func (c *cluster) converged() bool {
	want := c.chk.commitMax()
	for _, n := range c.members() {
		if !n.up || n.applied != want || len(n.pending) > 0 || n.core.HasReady() {
			return false
		}
	}
	for _, cl := range c.clients {
		if cl.state == waitingProposal || cl.state == waitingRead {
			return false
		}
	}
	return true
}

// compareReplicas checks that every member's state machine serializes to
// the same snapshot bytes, and that every member whose log ends at the
// commit index has the committed configuration in force.
func (c *cluster) compareReplicas() {
	var first []byte
	var firstID raft.NodeID
	for _, n := range c.members() {
		if s := n.core.Status(); s.LastIndex == c.chk.commitMax() && !slices.Equal(s.Config.Servers, c.chk.conf.Servers) {
			c.violate("membership", "n%d has configuration %v in force, but %v was committed last (at index %d)", n.id, s.Config.Servers, c.chk.conf.Servers, c.chk.confIndex)
			return
		}
		snap, err := n.sm.Snapshot()
		if err != nil {
			c.violate("determinism", "n%d: state machine Snapshot failed: %v", n.id, err)
			return
		}
		var buf bytes.Buffer
		_, err = snap.WriteTo(&buf)
		snap.Release()
		if err != nil {
			c.violate("determinism", "n%d: writing a snapshot failed: %v", n.id, err)
			return
		}
		if firstID == raft.None {
			first, firstID = buf.Bytes(), n.id
		} else if !bytes.Equal(first, buf.Bytes()) {
			c.violate("convergence", "after applying the same %d entries, n%d's state (snapshot bytes) differs from n%d's", n.applied, n.id, firstID)
			return
		}
	}
}
