package filestorage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// listSM is a state machine that records the commands applied to it.
type listSM struct {
	mu   sync.Mutex
	cmds []string
}

func (s *listSM) Apply(e raft.Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, string(e.Data))
	return len(s.cmds)
}

func (s *listSM) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return listSnapshot(strings.Join(s.cmds, "\n")), nil
}

func (s *listSM) Restore(r io.Reader) error {
	var cmds []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		cmds = append(cmds, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmds = cmds
	s.mu.Unlock()
	return nil
}

func (s *listSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

type listSnapshot string

func (l listSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(l))
	return int64(n), err
}
func (listSnapshot) Release() {}

// durableCluster is a cluster of Nodes, each on a filestorage directory,
// connected by an in-memory Network.
type durableCluster struct {
	t     testing.TB
	net   *raft.Network
	peers []raft.Server
	base  string
	tweak func(*raft.Config)

	mu     sync.Mutex
	nodes  map[raft.NodeID]*raft.Node
	stores map[raft.NodeID]*Storage
	sms    map[raft.NodeID]*listSM
}

func newDurableCluster(t testing.TB, n int, tweak func(*raft.Config)) *durableCluster {
	c := &durableCluster{t: t, net: raft.NewNetwork(1), base: t.TempDir(), tweak: tweak,
		nodes: map[raft.NodeID]*raft.Node{}, stores: map[raft.NodeID]*Storage{}, sms: map[raft.NodeID]*listSM{}}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, raft.Server{ID: raft.NodeID(i)})
	}
	for _, p := range c.peers {
		c.start(p.ID)
	}
	t.Cleanup(func() {
		for _, p := range c.peers {
			c.stop(p.ID)
		}
		c.net.Close()
	})
	return c
}

func (c *durableCluster) start(id raft.NodeID) {
	c.t.Helper()
	st, err := Open(filepath.Join(c.base, fmt.Sprint(id)), Options{SegmentSize: 16 << 10})
	if err != nil {
		c.t.Fatalf("node %d: open storage: %v", id, err)
	}
	cfg := raft.DefaultConfig()
	cfg.ID, cfg.Peers = id, c.peers
	cfg.TickInterval = 2 * time.Millisecond
	cfg.ElectionTicks, cfg.HeartbeatTicks = 30, 3
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	sm := &listSM{}
	nd, err := raft.NewNode(cfg, sm, st, c.net.Transport(id))
	if err != nil {
		c.t.Fatalf("node %d: start: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id], c.stores[id], c.sms[id] = nd, st, sm
	c.mu.Unlock()
}

func (c *durableCluster) stop(id raft.NodeID) {
	c.mu.Lock()
	nd, st := c.nodes[id], c.stores[id]
	delete(c.nodes, id)
	delete(c.stores, id)
	c.mu.Unlock()
	if nd == nil {
		return
	}
	if err := nd.Stop(); err != nil && !errors.Is(err, raft.ErrStopped) {
		c.t.Errorf("node %d stopped with error: %v", id, err)
	}
	if err := st.Close(); err != nil {
		c.t.Errorf("node %d: closing storage: %v", id, err)
	}
}

// propose sends cmd to whichever running node believes it leads.
func (c *durableCluster) propose(ctx context.Context, cmd string) error {
	c.mu.Lock()
	var lead *raft.Node
	for _, nd := range c.nodes {
		if l := nd.Leader(); l != raft.None && l == nd.ID() {
			lead = nd
		}
	}
	c.mu.Unlock()
	if lead == nil {
		return errors.New("no leader")
	}
	_, err := lead.Propose(ctx, []byte(cmd))
	return err
}

// writer proposes fresh values until stop is closed and records the ones
// acknowledged.
type writer struct {
	mu    sync.Mutex
	acked []string
	tries int
}

func (w *writer) run(c *durableCluster, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		cmd := fmt.Sprintf("w%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.propose(ctx, cmd)
		cancel()
		w.mu.Lock()
		w.tries++
		if err == nil {
			w.acked = append(w.acked, cmd)
		}
		w.mu.Unlock()
		if err != nil {
			// No leader right now: wait for a change instead of spinning.
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterOnDiskLosesNoAcknowledgedWrite runs a 3-node cluster on
// filestorage while one writer proposes values, and repeatedly stops and
// restarts single nodes and, every third round, the whole cluster at once.
// Snapshots, compaction and segment rollover happen along the way. In the
// end every node must have applied every acknowledged value, in the same
// order as the others. RAFT_STORAGE_CLUSTER_ROUNDS sets the rounds.
func TestClusterOnDiskLosesNoAcknowledgedWrite(t *testing.T) {
	rounds := envInt(t, "RAFT_STORAGE_CLUSTER_ROUNDS", 9)
	c := newDurableCluster(t, 3, func(cfg *raft.Config) {
		cfg.SnapshotThreshold = 40
		cfg.TrailingEntries = 10
	})
	w := &writer{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.run(c, stop) }()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	rng := rand.New(rand.NewPCG(42, 42))
	progress := func(n int) {
		target := w.count() + n
		waitFor(t, 30*time.Second, fmt.Sprintf("%d acknowledged writes", target), func() bool { return w.count() >= target })
	}
	progress(10)
	for round := range rounds {
		if round%3 == 2 {
			for _, p := range c.peers {
				c.stop(p.ID)
			}
			for _, p := range c.peers {
				c.start(p.ID)
			}
		} else {
			id := raft.NodeID(1 + rng.IntN(3))
			c.stop(id)
			progress(10) // the other two go on without it
			c.start(id)
		}
		progress(15)
	}
	close(stop)
	<-done

	w.mu.Lock()
	acked := append([]string(nil), w.acked...)
	tries := w.tries
	w.mu.Unlock()
	// Everything acknowledged must be applied everywhere, in one order.
	var lists map[raft.NodeID][]string
	waitFor(t, 30*time.Second, "every node to apply every acknowledged write", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		lists = map[raft.NodeID][]string{}
		for id, sm := range c.sms {
			lists[id] = sm.list()
		}
		n := len(lists[1])
		for _, l := range lists {
			if len(l) != n || !containsAll(l, acked) {
				return false
			}
		}
		return true
	})
	for id, l := range lists {
		if strings.Join(l, ",") != strings.Join(lists[1], ",") {
			t.Fatalf("node %d applied a different sequence than node 1", id)
		}
		seen := map[string]bool{}
		for _, v := range l {
			if seen[v] {
				t.Fatalf("node %d applied %s twice", id, v)
			}
			seen[v] = true
		}
	}
	snaps := 0
	for _, st := range c.stores {
		s, _, err := st.Snapshot()
		if err == nil && s.Index > 0 {
			snaps++
		}
	}
	if snaps == 0 {
		t.Errorf("no node took a snapshot; the test did not exercise compaction")
	}
	t.Logf("%d rounds: %d writes acknowledged of %d tried; %d applied on every node", rounds, len(acked), tries, len(lists[1]))
}

func containsAll(have, want []string) bool {
	set := make(map[string]bool, len(have))
	for _, v := range have {
		set[v] = true
	}
	for _, v := range want {
		if !set[v] {
			return false
		}
	}
	return true
}
