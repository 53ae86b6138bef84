package raft_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/raftgo/raft"
)

// register is a tiny replicated state machine: a log of strings.
type register struct {
	mu     sync.Mutex
	values []string
}

func (r *register) Apply(e raft.Entry) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.values = append(r.values, string(e.Data))
	return len(r.values)
}

func (r *register) Snapshot() (raft.Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return snapshotBytes(strings.Join(r.values, "\n")), nil
}

func (r *register) Restore(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.values = nil
	if len(b) > 0 {
		r.values = strings.Split(string(b), "\n")
	}
	return nil
}

func (r *register) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.values) == 0 {
		return ""
	}
	return r.values[len(r.values)-1]
}

type snapshotBytes string

func (s snapshotBytes) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, bytes.NewReader([]byte(s)))
}
func (s snapshotBytes) Release() {}

// Example starts a 3-node cluster in one process, replicates a command
// through the leader and reads it back linearizably on a follower.
func Example() {
	network := raft.NewNetwork(1)
	defer network.Close()
	peers := []raft.Server{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := map[raft.NodeID]*raft.Node{}
	states := map[raft.NodeID]*register{}
	for _, p := range peers {
		cfg := raft.DefaultConfig()
		cfg.ID, cfg.Peers = p.ID, peers
		states[p.ID] = &register{}
		n, err := raft.NewNode(cfg, states[p.ID], raft.NewMemoryStorage(), network.Transport(p.ID))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer n.Stop()
		nodes[p.ID] = n
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Propose on any node; a follower answers with the leader to retry on.
	var result any
	for id := raft.NodeID(1); ; id = id%3 + 1 {
		var err error
		result, err = nodes[id].Propose(ctx, []byte("hello"))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(10 * time.Millisecond) // no leader yet, or not this one
	}
	fmt.Println("applied as value number", result)

	// A linearizable read on a follower: Read waits until the local state
	// machine has every write committed before the call.
	for _, n := range nodes {
		if n.Leader() != n.ID() {
			for err := n.Read(ctx); err != nil; err = n.Read(ctx) {
				if ctx.Err() != nil {
					fmt.Println(err)
					return
				}
				time.Sleep(10 * time.Millisecond) // it has not heard of the leader yet
			}
			fmt.Println("follower reads", states[n.ID()].last())
			break
		}
	}
	// Output:
	// applied as value number 1
	// follower reads hello
}
