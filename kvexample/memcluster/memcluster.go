// Package memcluster runs a cluster of key-value nodes inside one process:
// each member is a raft.Node with a kvstore.Store, a raft.MemoryStorage and
// a transport on one shared raft.Network. It powers `go run ./kvexample`,
// the failover demo and the example's tests.
package memcluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/kvstore"
)

// Member is one node of the cluster.
type Member struct {
	ID      raft.NodeID
	Node    *raft.Node
	Store   *kvstore.Store
	Storage *raft.MemoryStorage
}

// Cluster is a set of Members on one in-memory network. Its methods are
// safe for concurrent use.
type Cluster struct {
	// Net is the network the members talk over; use it to inject faults.
	Net *raft.Network

	cfg   raft.Config
	peers []raft.Server

	mu       sync.Mutex
	members  map[raft.NodeID]*Member // running members
	storages map[raft.NodeID]*raft.MemoryStorage
	closed   bool
}

// Start boots a new cluster of n voters with IDs 1..n. cfg is the template
// for every member's configuration (its ID and Peers are set here); start
// from raft.DefaultConfig. seed drives the network's random faults.
func Start(n int, cfg raft.Config, seed uint64) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("memcluster: need at least one node, got %d", n)
	}
	c := &Cluster{
		Net:      raft.NewNetwork(seed),
		cfg:      cfg,
		members:  make(map[raft.NodeID]*Member),
		storages: make(map[raft.NodeID]*raft.MemoryStorage),
	}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, raft.Server{ID: raft.NodeID(i)})
	}
	for i := 1; i <= n; i++ {
		id := raft.NodeID(i)
		c.storages[id] = raft.NewMemoryStorage()
		if _, err := c.Restart(id); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Restart starts member id again on the storage it had (or a fresh one
// for an ID the cluster has not seen: such a node waits to be added with
// raft.Node.AddVoter or AddLearner). Its Store is rebuilt from the
// storage's snapshot and log. It is an error if id is running.
func (c *Cluster) Restart(id raft.NodeID) (*Member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("memcluster: cluster is closed")
	}
	if c.members[id] != nil {
		return nil, fmt.Errorf("memcluster: node %d is already running", id)
	}
	st := c.storages[id]
	cfg := c.cfg
	cfg.ID = id
	cfg.Peers = nil
	if st == nil {
		st = raft.NewMemoryStorage()
		c.storages[id] = st
	} else {
		cfg.Peers = c.peers
	}
	store := kvstore.New(0)
	nd, err := raft.NewNode(cfg, store, st, c.Net.Transport(id))
	if err != nil {
		return nil, fmt.Errorf("memcluster: starting node %d: %w", id, err)
	}
	m := &Member{ID: id, Node: nd, Store: store, Storage: st}
	c.members[id] = m
	return m, nil
}

// Member returns the running member id, or nil.
func (c *Cluster) Member(id raft.NodeID) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[id]
}

// Members returns the running members in ID order.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *Member) int { return int(a.ID) - int(b.ID) })
	return out
}

// Stop stops member id; its storage is kept for Restart.
func (c *Cluster) Stop(id raft.NodeID) error {
	c.mu.Lock()
	m := c.members[id]
	delete(c.members, id)
	c.mu.Unlock()
	if m == nil {
		return fmt.Errorf("memcluster: node %d is not running", id)
	}
	if err := m.Node.Stop(); err != nil && !errors.Is(err, raft.ErrStopped) {
		return err
	}
	return nil
}

// WaitLeader waits until one running member is leader and every running
// member knows it, and returns it.
func (c *Cluster) WaitLeader(ctx context.Context) (*Member, error) {
	for {
		if lead := c.agreedLeader(); lead != nil {
			return lead, nil
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("memcluster: no leader agreed on: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (c *Cluster) agreedLeader() *Member {
	members := c.Members()
	var lead raft.NodeID
	for _, m := range members {
		s := m.Node.Status()
		if s.Role == raft.Leader {
			lead = s.ID
		}
	}
	if lead == raft.None {
		return nil
	}
	var leader *Member
	for _, m := range members {
		if m.ID == lead {
			leader = m
		}
		if m.Node.Leader() != lead {
			return nil
		}
	}
	return leader
}

// Close stops every member and the network.
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closed = true
	ms := make([]*Member, 0, len(c.members))
	for _, m := range c.members {
		ms = append(ms, m)
	}
	clear(c.members)
	c.mu.Unlock()
	for _, m := range ms {
		m.Node.Stop()
	}
	c.Net.Close()
}
