package rafttest

import (
	"github.com/raftgo/raft"
)

type recovery struct {
	tick    int
	node    raft.NodeID
	restart bool // restart a crashed node, else rejoin an isolated one
	// unretire lets a retired node restart (from its old storage).
	unretire bool
}

// inject applies one scheduled fault.
func (c *cluster) inject(f Fault) {
	if c.tracing {
		c.tracef("fault %v", f)
	}
	switch f.Kind {
	case FaultCrash:
		n := c.nodes[f.Node]
		if f.Leader {
			n = c.leaderOr(n)
			c.recoveries = append(c.recoveries, recovery{tick: c.tick + f.For, node: n.id, restart: true})
		}
		c.crash(n, f.Survive)
	case FaultRestart:
		if n := c.nodes[f.Node]; !n.up && n.started && !n.retired {
			c.restart(n)
		}
	case FaultPartition:
		if f.Leader {
			n := c.leaderOr(c.nodes[f.Node])
			c.net.isolate(n.id, true)
			c.recoveries = append(c.recoveries, recovery{tick: c.tick + f.For, node: n.id})
			break
		}
		c.net.partition(f.Groups)
	case FaultOneWay:
		c.net.cutOneWay(f.Groups[0], f.Groups[1])
	case FaultHeal:
		c.net.heal()
	case FaultNetwork:
		c.net.set(f.Drop, f.Duplicate, f.Reorder, f.Delay)
	case FaultSlowDisk:
		c.nodes[f.Node].diskDelay = int64(f.Delay) * SubTicks
	case FaultSnapshot:
		c.snapshot(c.nodes[f.Node])
	case FaultCampaign:
		if n := c.nodes[f.Node]; n.up {
			n.core.Campaign()
			c.settle(n)
		}
	case FaultAddLearner, FaultAddVoter, FaultRemove:
		c.confQueue = append(c.confQueue, f)
	}
}

// leaderOr returns the node that leads now (the up leader of the highest
// term), or n if none does.
func (c *cluster) leaderOr(n *simNode) *simNode {
	var best *simNode
	for _, m := range c.nodes[1:] {
		if m.up && m.core.Role() == raft.Leader && (best == nil || m.core.Term() > best.core.Term()) {
			best = m
		}
	}
	if best == nil {
		return n
	}
	return best
}

// recover ends the leader-aimed faults whose time has come.
func (c *cluster) recover() {
	kept := c.recoveries[:0]
	for _, r := range c.recoveries {
		if r.tick > c.tick {
			kept = append(kept, r)
			continue
		}
		n := c.nodes[r.node]
		if c.tracing {
			c.tracef("recover n%d", n.id)
		}
		if r.restart {
			if r.unretire {
				n.retired = false
			}
			if !n.up && n.started && !n.retired {
				c.restart(n)
			}
		} else {
			c.net.isolate(n.id, false)
		}
	}
	c.recoveries = kept
}

// crash stops n. Its pending writes are lost except the first survive.
func (c *cluster) crash(n *simNode, survive int) {
	if !n.up {
		return
	}
	c.stats.Crashes++
	c.stop(n, survive)
}

// stop stops n as crash does, without counting a crash.
func (c *cluster) stop(n *simNode, survive int) {
	for i := 0; i < survive && i < len(n.pending) && c.err == nil; i++ {
		c.persist(n, &n.pending[i])
	}
	if c.tracing {
		c.tracef("n%d crash, %d of %d pending writes survive", n.id, min(survive, len(n.pending)), len(n.pending))
	}
	n.up, n.core, n.sm = false, nil, nil
	clear(n.pending)
	n.pending = n.pending[:0]
	for _, cl := range c.clients {
		switch {
		case cl.node != n.id:
		case cl.state == waitingProposal:
			c.finishUnknown(cl)
		case cl.state == waitingRead:
			c.abandonRead(cl)
		}
	}
	n.proposals, n.reads = nil, nil
}

func (c *cluster) restart(n *simNode) {
	c.stats.Restarts++
	if err := c.start(n); err != nil {
		c.violate("storage", "%v", err)
		return
	}
	c.settle(n)
}

// heal ends every fault: cuts, loss, slow disks and crashes.
func (c *cluster) heal() {
	if c.tracing {
		c.tracef("heal")
	}
	c.healed = true
	c.net.heal()
	c.net.set(0, 0, 0, 1)
	// Membership changes not done by now are given up (one already
	// proposed may still commit); retired nodes due back restart.
	c.stats.ConfDropped += len(c.confQueue)
	if c.confReq != nil {
		c.stats.ConfDropped++
	}
	c.confQueue, c.confReq = nil, nil
	for _, r := range c.recoveries {
		if r.unretire {
			c.nodes[r.node].retired = false
		}
	}
	c.recoveries = nil
	c.retireRemoved()
	for _, n := range c.nodes[1:] {
		n.diskDelay = 0
		for i := range n.pending {
			n.pending[i].doneAt = min(n.pending[i].doneAt, c.now+1)
		}
		n.lastDone = min(n.lastDone, c.now+1)
		if !n.up && n.started && !n.retired {
			c.restart(n)
		}
	}
}
