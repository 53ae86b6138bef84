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
	nw := NewNetwork(1)
	defer nw.Close()
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	stores := map[NodeID]*gatedStorage{}
	nodes := map[NodeID]*Node{}
	var gate chan struct{}
	defer func() {
		if gate != nil {
			close(gate)
		}
		for _, nd := range nodes {
			nd.Stop()
		}
	}()
	for _, p := range peers {
		cfg := testConfig(p.ID)
		cfg.TickInterval = 10 * time.Millisecond // a long election timeout keeps the leader in place while its disk is held
		cfg.Peers = peers
		stores[p.ID] = &gatedStorage{MemoryStorage: NewMemoryStorage()}
		nd, err := NewNode(cfg, &counterSM{}, stores[p.ID], nw.Transport(p.ID))
		if err != nil {
			t.Fatal(err)
		}
		nodes[p.ID] = nd
	}
	var lead NodeID
	waitFor(t, 10*time.Second, "a leader", func() bool {
		for id, nd := range nodes {
			if nd.Status().Role == Leader {
				lead = id
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[lead].Propose(ctx, []byte("warm-up")); err != nil {
		t.Fatalf("warm-up proposal: %v", err)
	}

	gate = stores[lead].close()
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

	close(gate)
	gate = nil
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
