package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/kvstore"
	"github.com/raftgo/raft/kvexample/memcluster"
)

// demoResult is what the failover demo observed.
type demoResult struct {
	FirstLeader raft.NodeID
	NewLeader   raft.NodeID
	Acked       map[string]string // every write the cluster acknowledged
	// Checked counts (node, key) pairs read back after the failover with
	// the expected value.
	Checked int
}

// timeline prints events with the time since the demo began.
type timeline struct {
	w     io.Writer
	start time.Time
}

func (t *timeline) logf(format string, args ...any) {
	ms := time.Since(t.start).Milliseconds()
	fmt.Fprintf(t.w, "[%5dms] %s\n", ms, fmt.Sprintf(format, args...))
}

// runDemo runs the scripted failover: a 3-node cluster elects a leader,
// takes writes, loses its leader, elects another, and still serves every
// acknowledged write through linearizable reads on the survivors.
func runDemo(ctx context.Context, w io.Writer, cfg raft.Config) (demoResult, error) {
	res := demoResult{Acked: make(map[string]string)}
	tl := &timeline{w: w, start: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	tl.logf("starting 3 nodes on an in-memory network (election timeout %v-%v)",
		time.Duration(cfg.ElectionTicks)*cfg.TickInterval, 2*time.Duration(cfg.ElectionTicks)*cfg.TickInterval)
	c, err := memcluster.Start(3, cfg, uint64(time.Now().UnixNano()))
	if err != nil {
		return res, err
	}
	defer c.Close()

	lead, err := c.WaitLeader(ctx)
	if err != nil {
		return res, err
	}
	res.FirstLeader = lead.ID
	tl.logf("node %d elected leader (term %d)", lead.ID, lead.Node.Status().Term)

	write := func(m *memcluster.Member, key, value string) error {
		cmd, err := kvstore.Command{Op: kvstore.OpPut, Key: key, Value: []byte(value)}.MarshalBinary()
		if err != nil {
			return err
		}
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		v, err := m.Node.Propose(pctx, cmd)
		if err != nil {
			return fmt.Errorf("put %s through node %d: %w", key, m.ID, err)
		}
		r := v.(kvstore.Result)
		res.Acked[key] = value
		tl.logf("put %s=%s through node %d: committed at index %d", key, value, m.ID, r.Index)
		return nil
	}
	for i := 1; i <= 5; i++ {
		if err := write(lead, fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i)); err != nil {
			return res, err
		}
	}

	tl.logf("stopping leader node %d", lead.ID)
	if err := c.Stop(lead.ID); err != nil {
		return res, err
	}
	var next *memcluster.Member
	for next == nil {
		m, err := c.WaitLeader(ctx)
		if err != nil {
			return res, err
		}
		if m.ID != res.FirstLeader {
			next = m
		}
	}
	res.NewLeader = next.ID
	tl.logf("node %d elected leader (term %d)", next.ID, next.Node.Status().Term)
	if err := write(next, "key6", "value6"); err != nil {
		return res, err
	}

	for _, m := range c.Members() {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.Node.Read(rctx)
		rcancel()
		if err != nil {
			return res, fmt.Errorf("linearizable read on node %d: %w", m.ID, err)
		}
		ok := 0
		for k, want := range res.Acked {
			got, found := m.Store.Get(k)
			if !found || string(got) != want {
				return res, fmt.Errorf("node %d: acknowledged %s=%s reads as %q (found=%t)", m.ID, k, want, got, found)
			}
			ok++
		}
		res.Checked += ok
		tl.logf("node %d (%s): linearizable read sees all %d acknowledged keys", m.ID, m.Node.Status().Role, ok)
	}
	if res.Checked != len(res.Acked)*2 {
		return res, errors.New("demo checked fewer keys than it wrote")
	}
	tl.logf("done: leader %d -> %d, %d acknowledged writes survived the failover", res.FirstLeader, res.NewLeader, len(res.Acked))
	return res, nil
}
