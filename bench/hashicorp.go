package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// hcCounter is the trivial counter state machine for hashicorp/raft. Apply,
// Snapshot and Restore run on the library's FSM goroutine.
type hcCounter struct{ n uint64 }

func (c *hcCounter) Apply(*hraft.Log) any { c.n++; return nil }

func (c *hcCounter) Snapshot() (hraft.FSMSnapshot, error) { return hcSnapshot(c.n), nil }

func (c *hcCounter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	n, err := readCounter(rc)
	if err != nil {
		return err
	}
	c.n = n
	return nil
}

type hcSnapshot uint64

func (s hcSnapshot) Persist(sink hraft.SnapshotSink) error {
	if _, err := counterSnapshot(s).WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (hcSnapshot) Release() {}

// hcCountingLogs counts the entries per log write (the leader's group
// commit size).
type hcCountingLogs struct {
	hraft.LogStore
	writes, entries atomic.Uint64
}

func (s *hcCountingLogs) StoreLog(l *hraft.Log) error {
	s.writes.Add(1)
	s.entries.Add(1)
	return s.LogStore.StoreLog(l)
}

func (s *hcCountingLogs) StoreLogs(ls []*hraft.Log) error {
	s.writes.Add(1)
	s.entries.Add(uint64(len(ls)))
	return s.LogStore.StoreLogs(ls)
}

// hcOptions selects hashicorp/raft's plugins.
type hcOptions struct {
	dir string // non-empty: raft-boltdb/v2 (fsync on) and file snapshots under dir
	tcp bool   // NetworkTransport over loopback TCP instead of InmemTransport
}

func hcConfig() *hraft.Config {
	c := hraft.DefaultConfig()
	c.Logger = hclog.NewNullLogger()
	// SnapshotThreshold (8192) is only checked every SnapshotInterval
	// (default 120s); at benchmark rates the in-memory log would grow by
	// millions of entries in between, and the whole process (every
	// contender) would pay for that heap in GC time. Checking often gives
	// it the same snapshot-every-8192-entries policy as the others.
	c.SnapshotInterval = 250 * time.Millisecond
	return c
}

type hcCluster struct {
	rafts   []*hraft.Raft
	logs    []*hcCountingLogs
	closers []func() error
	leader  atomic.Int32
}

func startHashicorp(opts hcOptions) (cluster, error) {
	const n = 3
	c := &hcCluster{}
	trs := make([]hraft.Transport, n)
	var servers []hraft.Server
	for i := range n {
		id := hraft.ServerID(fmt.Sprint(i + 1))
		if opts.tcp {
			tr, err := hraft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
			if err != nil {
				c.Stop()
				return nil, err
			}
			trs[i] = tr
			c.closers = append(c.closers, tr.Close)
		} else {
			_, tr := hraft.NewInmemTransport("")
			trs[i] = tr
			c.closers = append(c.closers, tr.Close)
		}
		servers = append(servers, hraft.Server{ID: id, Address: trs[i].LocalAddr()})
	}
	if !opts.tcp {
		for i := range n {
			for j := range n {
				if i != j {
					trs[i].(*hraft.InmemTransport).Connect(trs[j].LocalAddr(), trs[j])
				}
			}
		}
	}
	for i := range n {
		conf := hcConfig()
		conf.LocalID = servers[i].ID
		var logs hraft.LogStore
		var stable hraft.StableStore
		var snaps hraft.SnapshotStore
		if opts.dir != "" {
			dir := filepath.Join(opts.dir, fmt.Sprintf("hashicorp-%d", i+1))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				c.Stop()
				return nil, err
			}
			bs, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
			if err != nil {
				c.Stop()
				return nil, err
			}
			c.closers = append(c.closers, bs.Close)
			cache, err := hraft.NewLogCache(512, bs)
			if err != nil {
				c.Stop()
				return nil, err
			}
			logs, stable = cache, bs
			if snaps, err = hraft.NewFileSnapshotStore(dir, 2, io.Discard); err != nil {
				c.Stop()
				return nil, err
			}
		} else {
			st := hraft.NewInmemStore()
			logs, stable, snaps = st, st, hraft.NewInmemSnapshotStore()
		}
		cl := &hcCountingLogs{LogStore: logs}
		if err := hraft.BootstrapCluster(conf, cl, stable, snaps, trs[i], hraft.Configuration{Servers: servers}); err != nil {
			c.Stop()
			return nil, fmt.Errorf("hashicorp bootstrap: %w", err)
		}
		r, err := hraft.NewRaft(conf, &hcCounter{}, cl, stable, snaps, trs[i])
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("hashicorp node %d: %w", i+1, err)
		}
		c.rafts = append(c.rafts, r)
		c.logs = append(c.logs, cl)
	}
	if err := c.findLeader(20 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *hcCluster) findLeader(timeout time.Duration) error {
	return waitFor(timeout, "a hashicorp/raft leader", func() bool {
		for i, r := range c.rafts {
			if r.State() == hraft.Leader {
				c.leader.Store(int32(i))
				return true
			}
		}
		return false
	})
}

func (c *hcCluster) Propose(ctx context.Context, cmd []byte) error {
	for {
		f := c.rafts[c.leader.Load()].Apply(cmd, 0)
		err := f.Error()
		if errors.Is(err, hraft.ErrNotLeader) || errors.Is(err, hraft.ErrLeadershipLost) {
			if ferr := c.findLeader(20 * time.Second); ferr != nil {
				return ferr
			}
			if errors.Is(err, hraft.ErrLeadershipLost) {
				return err
			}
			continue
		}
		return err
	}
}

func (c *hcCluster) BatchStats() (writes, entries uint64) {
	l := c.logs[c.leader.Load()]
	return l.writes.Load(), l.entries.Load()
}

func (c *hcCluster) Stop() {
	for _, r := range c.rafts {
		r.Shutdown().Error()
	}
	for _, cl := range c.closers {
		cl()
	}
}
