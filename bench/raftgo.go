package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/raftgo/raft"
)

// raftgoCounter is the trivial counter state machine for this library.
// Apply, Snapshot and Restore run on one goroutine (the library's
// contract), so it needs no lock.
type raftgoCounter struct{ n uint64 }

func (c *raftgoCounter) Apply(raft.Entry) any {
	c.n++
	return nil
}

func (c *raftgoCounter) Snapshot() (raft.Snapshot, error) { return counterSnapshot(c.n), nil }

func (c *raftgoCounter) Restore(r io.Reader) error {
	n, err := readCounter(r)
	if err != nil {
		return err
	}
	c.n = n
	return nil
}

// counterSnapshot is a counter's value, written as 8 bytes.
type counterSnapshot uint64

func (s counterSnapshot) WriteTo(w io.Writer) (int64, error) {
	var b [8]byte
	putUint64(b[:], uint64(s))
	n, err := w.Write(b[:])
	return int64(n), err
}

func (counterSnapshot) Release() {}

// countingStorage wraps a raft.Storage to count the entries per Save (the
// size of each group commit).
type countingStorage struct {
	raft.Storage
	writes, entries atomic.Uint64
}

func (s *countingStorage) Save(hs raft.HardState, ents []raft.Entry) error {
	if len(ents) > 0 {
		s.writes.Add(1)
		s.entries.Add(uint64(len(ents)))
	}
	return s.Storage.Save(hs, ents)
}

// raftgoOptions selects this library's plugins.
type raftgoOptions struct {
	// newStorage returns node id's storage; nil means raft.MemoryStorage.
	newStorage func(id raft.NodeID) (raft.Storage, func() error, error)
	// newTransports returns the nodes' transports; nil means raft.Network.
	newTransports func(ids []raft.NodeID) ([]raft.Transport, []raft.Server, func(), error)
}

func raftgoConfig() raft.Config {
	cfg := raft.DefaultConfig()
	return cfg
}

type raftgoCluster struct {
	nodes   []*raft.Node
	stores  []*countingStorage
	closers []func() error
	net     *raft.Network
	stopNet func()
	leader  atomic.Int32 // index into nodes
}

func startRaftgo(opts raftgoOptions) (cluster, error) {
	const n = 3
	ids := make([]raft.NodeID, n)
	for i := range ids {
		ids[i] = raft.NodeID(i + 1)
	}
	c := &raftgoCluster{}
	var trs []raft.Transport
	peers := make([]raft.Server, n)
	for i, id := range ids {
		peers[i] = raft.Server{ID: id}
	}
	if opts.newTransports != nil {
		var err error
		trs, peers, c.stopNet, err = opts.newTransports(ids)
		if err != nil {
			return nil, err
		}
	} else {
		c.net = raft.NewNetwork(1)
		for _, id := range ids {
			trs = append(trs, c.net.Transport(id))
		}
	}
	for i, id := range ids {
		var st raft.Storage = raft.NewMemoryStorage()
		var closer func() error
		if opts.newStorage != nil {
			var err error
			if st, closer, err = opts.newStorage(id); err != nil {
				c.Stop()
				return nil, err
			}
		}
		cs := &countingStorage{Storage: st}
		cfg := raftgoConfig()
		cfg.ID = id
		cfg.Peers = peers
		nd, err := raft.NewNode(cfg, &raftgoCounter{}, cs, trs[i])
		if err != nil {
			if closer != nil {
				closer()
			}
			c.Stop()
			return nil, fmt.Errorf("raftgo node %d: %w", id, err)
		}
		c.nodes = append(c.nodes, nd)
		c.stores = append(c.stores, cs)
		if closer != nil {
			c.closers = append(c.closers, closer)
		}
	}
	if err := c.findLeader(10 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *raftgoCluster) findLeader(timeout time.Duration) error {
	return waitFor(timeout, "a raftgo leader", func() bool {
		for i, nd := range c.nodes {
			if nd.Status().Role == raft.Leader {
				c.leader.Store(int32(i))
				return true
			}
		}
		return false
	})
}

func (c *raftgoCluster) Propose(ctx context.Context, cmd []byte) error {
	for {
		i := c.leader.Load()
		_, err := c.nodes[i].Propose(ctx, cmd)
		if err == nil {
			return nil
		}
		if nl := (*raft.NotLeaderError)(nil); errors.As(err, &nl) {
			if ferr := c.findLeader(10 * time.Second); ferr != nil {
				return ferr
			}
			continue
		}
		return err
	}
}

func (c *raftgoCluster) BatchStats() (writes, entries uint64) {
	s := c.stores[c.leader.Load()]
	return s.writes.Load(), s.entries.Load()
}

func (c *raftgoCluster) Stop() {
	for _, nd := range c.nodes {
		nd.Stop()
	}
	for _, cl := range c.closers {
		cl()
	}
	if c.net != nil {
		c.net.Close()
	}
	if c.stopNet != nil {
		c.stopNet()
	}
}
