package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func snapshotConfig(threshold uint64, chunk int) func(*Config) {
	return func(c *Config) {
		c.SnapshotThreshold = threshold
		c.TrailingEntries = threshold / 10
		c.SnapshotChunkSize = chunk
	}
}

// proposeMany commits count commands through the leader with a few
// concurrent writers and returns them in commit order.
func (c *testCluster) proposeMany(t *testing.T, prefix string, count int) {
	t.Helper()
	const writers = 16
	var next atomic.Int64
	errc := make(chan error, writers)
	for range writers {
		go func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(count) {
					errc <- nil
					return
				}
				cmd := prefix + strconv.FormatInt(i, 10)
				var err error
				for attempt := 0; attempt < 50; attempt++ {
					lead := c.leaderNow()
					if lead == None {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					if _, err = c.propose(lead, cmd); err == nil {
						break
					}
				}
				if err != nil {
					errc <- fmt.Errorf("command %s: %w", cmd, err)
					return
				}
			}
		}()
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// leaderNow returns a node that currently believes it leads, or None.
func (c *testCluster) leaderNow() NodeID {
	for id, nd := range c.nodes {
		if nd.Leader() == id {
			return id
		}
	}
	return None
}

// sameState waits until every running node's state machine holds the same
// commands as node ref.
func (c *testCluster) waitSameState(t *testing.T, ref NodeID, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		want := c.sms[ref].commands()
		same := true
		for id := range c.nodes {
			if fmt.Sprint(c.sms[id].commands()) != fmt.Sprint(want) {
				same = false
			}
		}
		if same {
			return want
		}
		if time.Now().After(deadline) {
			for id := range c.nodes {
				t.Logf("node %d: %d commands, status %+v", id, len(c.sms[id].commands()), c.nodes[id].Status())
			}
			t.Fatalf("state machines differ after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLaggingFollowerCatchesUpViaSnapshot(t *testing.T) {
	count := 20000
	if testing.Short() {
		count = 3000
	}
	c := newTestCluster(t, 3, snapshotConfig(1000, 4096))
	lead := c.waitLeader(5 * time.Second)
	lagger := lead%3 + 1
	c.stop(lagger)
	c.proposeMany(t, "e", count)
	lead = c.waitLeader(5 * time.Second)
	s := c.nodes[lead].Status()
	if s.FirstIndex <= 1 || s.Snapshot == 0 {
		t.Fatalf("leader never compacted: first index %d, snapshot %d", s.FirstIndex, s.Snapshot)
	}
	c.start(lagger) // a fresh state machine on its old storage
	got := c.waitSameState(t, lead, 30*time.Second)
	if len(got) != count {
		t.Fatalf("state has %d commands, want %d", len(got), count)
	}
	// The lagger's storage now holds the leader's snapshot: it was caught
	// up by InstallSnapshot, not by replaying the log from index 1.
	meta, rc, err := c.stores[lagger].Snapshot()
	if err != nil {
		t.Fatalf("lagging follower has no snapshot: %v", err)
	}
	rc.Close()
	if meta.Index < s.FirstIndex-1 {
		t.Fatalf("lagger snapshot at %d does not cover the leader's compacted log (first index %d)", meta.Index, s.FirstIndex)
	}
}

func TestSnapshotTransferUnderLossAndLeaderChange(t *testing.T) {
	c := newTestCluster(t, 3, snapshotConfig(300, 512))
	lead := c.waitLeader(5 * time.Second)
	lagger := lead%3 + 1
	c.net.Disconnect(lagger)
	c.proposeMany(t, "x", 3000)
	c.net.SetFaults(LinkFaults{Drop: 0.3})
	c.net.Reconnect(lagger)
	// Let the transfer start, then move leadership mid-transfer.
	deadline := time.Now().Add(10 * time.Second)
	for c.nodes[lagger].Status().Applied == 0 && time.Now().Before(deadline) {
		if c.nodes[lead].Status().Progress[lagger].State == StateSnapshot {
			break
		}
		time.Sleep(time.Millisecond)
	}
	other := NodeID(6) - lead - lagger
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = c.nodes[lead].TransferLeadership(ctx, other) // may fail under loss; the point is the churn
	cancel()
	c.proposeMany(t, "y", 500)
	c.net.SetFaults(LinkFaults{})
	lead = c.waitLeader(10 * time.Second)
	got := c.waitSameState(t, lead, 60*time.Second)
	if len(got) != 3500 {
		t.Fatalf("state has %d commands, want 3500", len(got))
	}
}

// failingRestoreSM fails every Restore.
type failingRestoreSM struct{ counterSM }

func (s *failingRestoreSM) Restore(io.Reader) error { return errors.New("disk full") }

func TestRestoreFailureStopsNode(t *testing.T) {
	c := newTestCluster(t, 3, snapshotConfig(100, 1024))
	lead := c.waitLeader(5 * time.Second)
	lagger := lead%3 + 1
	c.stop(lagger)
	c.proposeMany(t, "r", 1000)
	cfg := c.cfg
	cfg.ID, cfg.Peers = lagger, c.peers
	bad := &failingRestoreSM{}
	// Its storage has no snapshot, so NewNode succeeds and the failure
	// comes from the snapshot the leader sends.
	nd, err := NewNode(cfg, bad, c.stores[lagger], c.net.Transport(lagger))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-nd.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("node with a failing Restore kept running")
	}
	if err := nd.Err(); err == nil || !strings.Contains(err.Error(), "restore snapshot") {
		t.Fatalf("Err() = %v, want a restore failure", err)
	}
	if n := len(bad.commands()); n != 0 {
		t.Fatalf("node applied %d entries after a failed restore", n)
	}
	if _, err := nd.Propose(context.Background(), []byte("z")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Propose after fatal stop: %v, want ErrStopped", err)
	}
	nd.Stop()
}

func TestRestartRestoresSnapshotAndReplaysOnlyTheTail(t *testing.T) {
	c := newTestCluster(t, 3, snapshotConfig(200, 4096))
	c.waitLeader(5 * time.Second)
	c.proposeMany(t, "s", 1000)
	lead := c.waitLeader(5 * time.Second)
	id := lead%3 + 1
	c.waitSameState(t, lead, 10*time.Second)
	c.stop(id)
	meta, rc, err := c.stores[id].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	nd := c.start(id)
	want := c.sms[lead].commands()
	c.waitSameState(t, lead, 10*time.Second)
	// Apply was called only for the entries after the snapshot: the
	// restored part came from Restore.
	if st := nd.Status(); st.Applied < meta.Index {
		t.Fatalf("applied %d < snapshot %d", st.Applied, meta.Index)
	}
	if len(want) != 1000 {
		t.Fatalf("%d commands, want 1000", len(want))
	}
}

// digestSM keeps constant-size state (a count and a running hash), so the
// heap measured while it runs is the library's, not the application's.
type digestSM struct {
	mu    sync.Mutex
	count uint64
	sum   uint64
}

func (d *digestSM) Apply(e Entry) any {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := fnv.New64a()
	binary.Write(h, binary.BigEndian, d.sum)
	h.Write(e.Data)
	d.sum = h.Sum64()
	d.count++
	return d.count
}

func (d *digestSM) Snapshot() (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytesSnapshot(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, d.count), d.sum)), nil
}

func (d *digestSM) Restore(r io.Reader) error {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	d.mu.Lock()
	d.count, d.sum = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	d.mu.Unlock()
	return nil
}

func (d *digestSM) state() (uint64, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count, d.sum
}

// TestInMemoryLogStaysBounded applies many entries with frequent snapshots
// and checks the in-memory log never grows past the snapshot interval plus
// the trailing tail. RAFT_BOUNDED_ENTRIES scales it (docs/snapshots.md
// reports a 1,000,000-entry run with a snapshot every 10,000 entries).
func TestInMemoryLogStaysBounded(t *testing.T) {
	total := 30000
	if v, err := strconv.Atoi(os.Getenv("RAFT_BOUNDED_ENTRIES")); err == nil && v > 0 {
		total = v
	}
	every := uint64(max(2000, total/100))
	nw := NewNetwork(7)
	defer nw.Close()
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := make([]*Node, 3)
	sms := make([]*digestSM, 3)
	for i := range nodes {
		cfg := testConfig(NodeID(i + 1))
		cfg.Peers = peers
		cfg.SnapshotThreshold, cfg.TrailingEntries = every, 100
		sms[i] = &digestSM{}
		nd, err := NewNode(cfg, sms[i], NewMemoryStorage(), nw.Transport(NodeID(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = nd
		defer nd.Stop()
	}
	leader := func() *Node {
		for _, nd := range nodes {
			if nd.Leader() == nd.ID() {
				return nd
			}
		}
		return nil
	}
	const writers = 64
	var next atomic.Int64
	errc := make(chan error, writers)
	cmd := make([]byte, 128)
	for range writers {
		go func() {
			for next.Add(1) <= int64(total) {
				var err error = ErrStopped
				for attempt := 0; attempt < 100 && err != nil; attempt++ {
					if l := leader(); l != nil {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						_, err = l.Propose(ctx, cmd)
						cancel()
					} else {
						time.Sleep(5 * time.Millisecond)
					}
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	var peakLog, peakHeap uint64
	var ms runtime.MemStats
	for finished := 0; finished < writers; {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
			finished++
			continue
		case <-time.After(50 * time.Millisecond):
		}
		for _, nd := range nodes {
			s := nd.Status()
			peakLog = max(peakLog, s.LastIndex-s.FirstIndex+1)
		}
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapInuse)
	}
	// Each node may be one snapshot behind while the next is written, plus
	// the trailing tail and entries in flight.
	bound := 3*every + 100 + 4096
	if peakLog > bound {
		t.Fatalf("in-memory log peaked at %d entries, bound %d", peakLog, bound)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c0, s0 := sms[0].state()
		c1, s1 := sms[1].state()
		c2, s2 := sms[2].state()
		if c0 >= uint64(total) && c0 == c1 && c1 == c2 && s0 == s1 && s1 == s2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas differ: %d/%x %d/%x %d/%x", c0, s0, c1, s1, c2, s2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d entries applied, snapshot every %d; peak in-memory log %d entries; peak heap in use %d MiB", total, every, peakLog, peakHeap>>20)
}

func TestSnapshotOnDemandCompactsTheLog(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SnapshotThreshold = 0; cfg.TrailingEntries = 5 })
	c.waitLeader(5 * time.Second)
	c.proposeMany(t, "d", 100)
	lead := c.waitLeader(5 * time.Second)
	nd := c.nodes[lead]
	waitFor(t, 10*time.Second, "the leader to apply everything", func() bool { return len(c.sms[lead].commands()) == 100 })
	if _, _, err := c.stores[lead].Snapshot(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("a snapshot exists with automatic snapshots off: %v", err)
	}
	applied := nd.Status().Applied
	if err := nd.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	// It is written in the background; then the log is compacted, keeping
	// the trailing entries.
	waitFor(t, 10*time.Second, "the snapshot to be saved and the log compacted", func() bool {
		s := nd.Status()
		return s.Snapshot >= applied && s.FirstIndex == s.Snapshot-5+1
	})
	meta, rc, err := c.stores[lead].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var restored counterSM
	if err := restored.Restore(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got := len(restored.commands()); uint64(got) > meta.Index || got != 100 {
		t.Fatalf("snapshot at index %d restores %d commands, want 100", meta.Index, got)
	}
}
