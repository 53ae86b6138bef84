package rafttest

import (
	"errors"
	"math"

	"github.com/raftgo/raft"
)

type clientState uint8

const (
	idle clientState = iota
	waitingProposal
	waitingRead
)

// client issues one request at a time and records it in the history.
type client struct {
	id    int
	state clientState
	op    *Op
	hint  raft.NodeID // the node believed to lead
	// giveUpAt bounds retries of an op that never got into a log.
	giveUpAt int64
	nextAt   int64
	deadline int64
	// where the current request waits
	node        raft.NodeID
	index, term uint64
	ctx         uint64
	readIndex   uint64
}

func (c *cluster) requestTimeout() int64 {
	return int64(5*c.opts.ElectionTicks) * SubTicks
}

func (c *cluster) think() int64 {
	return c.rng.Int64N(int64(c.opts.Workload.ThinkTicks)*SubTicks + 1)
}

// act starts, or retries, cl's request.
func (c *cluster) act(cl *client) {
	w := &c.opts.Workload
	if cl.op == nil {
		read := w.Query != nil && c.rng.Float64() < w.ReadRatio
		op := &Op{Client: cl.id, Read: read, Call: c.nextStamp()}
		if read {
			op.Input = w.Query(c.rng)
		} else {
			op.Input = w.Command(c.rng)
		}
		cl.op = op
		cl.giveUpAt = c.now + 2*c.requestTimeout()
	}
	if c.now > cl.giveUpAt {
		// Never appended anywhere: the request had no effect.
		if c.tracing {
			c.tracef("client %d gives up", cl.id)
		}
		c.resetClient(cl)
		return
	}
	n := c.pickNode(cl)
	if n == nil {
		cl.nextAt = c.now + SubTicks
		return
	}
	var err error
	if cl.op.Read {
		c.readCtx++
		ctx := c.readCtx
		if err = n.core.ReadIndex(ctx); err == nil {
			n.reads[ctx] = cl
			cl.state, cl.node, cl.ctx, cl.readIndex = waitingRead, n.id, ctx, 0
			if c.tracing {
				c.tracef("client %d read ctx=%d at n%d", cl.id, ctx, n.id)
			}
		}
	} else {
		var idx uint64
		if idx, err = n.core.Propose(cl.op.Input); err == nil {
			n.proposals[idx] = cl
			cl.state, cl.node, cl.index, cl.term = waitingProposal, n.id, idx, n.core.Term()
			if c.tracing {
				c.tracef("client %d propose at n%d index=%d term=%d", cl.id, n.id, idx, cl.term)
			}
		}
	}
	if err != nil {
		var nl *raft.NotLeaderError
		if errors.As(err, &nl) {
			cl.hint = nl.Leader
		}
		cl.nextAt = c.now + SubTicks
		return
	}
	cl.deadline = c.now + c.requestTimeout()
	c.settle(n)
}

func (c *cluster) pickNode(cl *client) *simNode {
	if h := cl.hint; h != raft.None && int(h) < len(c.nodes) && c.nodes[h].up && c.rng.IntN(4) != 0 {
		return c.nodes[h]
	}
	k := len(c.nodes) - 1
	start := c.rng.IntN(k)
	for i := range k {
		if n := c.nodes[1+(start+i)%k]; n.up {
			return n
		}
	}
	return nil
}

func (c *cluster) resetClient(cl *client) {
	cl.op, cl.state = nil, idle
	cl.nextAt = c.now + c.think()
}

func (c *cluster) record(cl *client) {
	c.history = append(c.history, *cl.op)
	c.resetClient(cl)
}

// proposalApplied handles the apply of the index cl's proposal got.
func (c *cluster) proposalApplied(cl *client, e *raft.Entry, res any) {
	if e.Term != cl.term {
		// Another entry committed at that index: ours never will. Retry.
		if c.tracing {
			c.tracef("client %d proposal at %d overwritten, retrying", cl.id, e.Index)
		}
		cl.state, cl.nextAt = idle, c.now+1
		return
	}
	cl.op.Output, cl.op.Return = res, c.nextStamp()
	cl.op.Node, cl.op.Index = cl.node, e.Index
	c.stats.Proposals++
	if c.tracing {
		c.tracef("client %d proposal at %d done", cl.id, e.Index)
	}
	c.record(cl)
}

// finishUnknown records cl's proposal as one whose outcome is unknown.
func (c *cluster) finishUnknown(cl *client) {
	cl.op.Unknown, cl.op.Return = true, math.MaxInt64
	cl.op.Node, cl.op.Index = cl.node, cl.index
	if c.tracing {
		c.tracef("client %d proposal at %d outcome unknown", cl.id, cl.index)
	}
	c.record(cl)
}

// abandonRead drops cl's read: it returned nothing, so it has no place in
// the history.
func (c *cluster) abandonRead(cl *client) {
	if c.tracing {
		c.tracef("client %d read abandoned", cl.id)
	}
	c.resetClient(cl)
}

// readIndexKnown handles the answer to cl's read index request on n.
func (c *cluster) readIndexKnown(n *simNode, cl *client, index uint64) {
	delete(n.reads, cl.ctx)
	if index == 0 {
		cl.state, cl.nextAt, cl.hint = idle, c.now+SubTicks, raft.None
		return
	}
	cl.readIndex = index
}

// serveReads answers the reads on n whose read index n has applied.
func (c *cluster) serveReads(n *simNode) {
	for _, cl := range c.clients {
		if cl.state == waitingRead && cl.node == n.id && cl.readIndex != 0 && cl.readIndex <= n.applied {
			cl.op.Output = c.opts.Workload.Read(n.sm, cl.op.Input)
			cl.op.Return = c.nextStamp()
			cl.op.Node, cl.op.Index = n.id, cl.readIndex
			c.stats.Reads++
			if c.tracing {
				c.tracef("client %d read at n%d index=%d done", cl.id, n.id, cl.readIndex)
			}
			c.record(cl)
		}
	}
}

// expireClients gives up on requests that waited too long.
func (c *cluster) expireClients() {
	for _, cl := range c.clients {
		if (cl.state != waitingProposal && cl.state != waitingRead) || cl.deadline > c.now {
			continue
		}
		n := c.nodes[cl.node]
		if cl.state == waitingProposal {
			if n.up {
				delete(n.proposals, cl.index)
			}
			c.finishUnknown(cl)
			continue
		}
		if n.up {
			delete(n.reads, cl.ctx)
		}
		c.abandonRead(cl)
	}
}
