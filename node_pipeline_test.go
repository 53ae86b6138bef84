package raft

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedStorage holds every Save that carries entries while its gate is
// closed, so a test can keep a node's disk write in flight.
type gatedStorage struct {
	*MemoryStorage
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	blocked atomic.Bool   // a Save is waiting at the gate
}

func (s *gatedStorage) Save(hs HardState, ents []Entry) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil && len(ents) > 0 {
		s.blocked.Store(true)
		<-g
		s.blocked.Store(false)
	}
	return s.MemoryStorage.Save(hs, ents)
}

func (s *gatedStorage) close() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = make(chan struct{})
	return s.gate
}

func (s *gatedStorage) holds(data string) bool {
	st, _ := s.Load()
	for _, e := range st.Entries {
		if string(e.Data) == data {
			return true
		}
	}
	return false
}

// TestLeaderReplicatesWhileItsOwnWriteIsInFlight checks the overlap the
// dissertation allows (section 10.2.1): the leader hands AppendEntries to
// the transport before its own write of the same entries finishes, so the
// followers persist them while the leader's disk is still busy. The
// leader counts itself toward the commit only once its write is done,
// which the proposal's outcome after the gate opens shows.
func TestLeaderReplicatesWhileItsOwnWriteIsInFlight(t *testing.T) {
	c := newGatedCluster(t, nil, nil)
	nodes, stores, lead := c.nodes, c.stores, c.lead
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c.holdLeaderDisk()
	done := make(chan error, 1)
	go func() {
		_, err := nodes[lead].Propose(ctx, []byte("x"))
		done <- err
	}()
	waitFor(t, 10*time.Second, "both followers to persist the entry while the leader's write is held", func() bool {
		n := 0
		for id, st := range stores {
			if id != lead && st.holds("x") {
				n++
			}
		}
		return n == 2
	})
	if !stores[lead].blocked.Load() || stores[lead].holds("x") {
		t.Fatal("the leader's own write finished early: the test did not hold it in flight")
	}
	select {
	case err := <-done:
		t.Fatalf("proposal returned (%v) while the leader's own write was still in flight", err)
	default:
	}

	c.release()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, ErrLeadershipLost) {
			t.Fatalf("proposal after the leader's write completed: %v", err)
		}
		if err == nil && !stores[lead].holds("x") {
			t.Fatal("proposal succeeded but the leader never stored the entry")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proposal did not finish after the leader's write was released")
	}
}

// gatedCluster is three Nodes on gatedStorage (wrapped by wrap, if set)
// over an in-memory network, with an elected leader that has committed a
// warm-up proposal. The test's cleanup opens a held gate and stops the
// nodes.
type gatedCluster struct {
	nodes  map[NodeID]*Node
	stores map[NodeID]*gatedStorage
	lead   NodeID
	gate   chan struct{}
}

func newGatedCluster(t *testing.T, tweak func(*Config), wrap func(*gatedStorage) Storage) *gatedCluster {
	t.Helper()
	nw := NewNetwork(1)
	c := &gatedCluster{nodes: map[NodeID]*Node{}, stores: map[NodeID]*gatedStorage{}}
	t.Cleanup(func() {
		c.release()
		for _, nd := range c.nodes {
			nd.Stop()
		}
		nw.Close()
	})
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	for _, p := range peers {
		cfg := testConfig(p.ID)
		cfg.TickInterval = 10 * time.Millisecond // a long election timeout keeps the leader in place while its disk is held
		cfg.Peers = peers
		if tweak != nil {
			tweak(&cfg)
		}
		c.stores[p.ID] = &gatedStorage{MemoryStorage: NewMemoryStorage()}
		var st Storage = c.stores[p.ID]
		if wrap != nil {
			st = wrap(c.stores[p.ID])
		}
		nd, err := NewNode(cfg, &counterSM{}, st, nw.Transport(p.ID))
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[p.ID] = nd
	}
	waitFor(t, 10*time.Second, "a leader", func() bool {
		for id, nd := range c.nodes {
			if nd.Status().Role == Leader {
				c.lead = id
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[c.lead].Propose(ctx, []byte("warm-up")); err != nil {
		t.Fatalf("warm-up proposal: %v", err)
	}
	return c
}

// holdLeaderDisk makes the leader's Saves of entries wait until release.
func (c *gatedCluster) holdLeaderDisk() { c.gate = c.stores[c.lead].close() }

func (c *gatedCluster) release() {
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
}
