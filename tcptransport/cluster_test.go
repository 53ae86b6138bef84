package tcptransport_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"go.uber.org/goleak"
)

// listSM is a state machine that records its commands in order.
type listSM struct {
	mu       sync.Mutex
	cmds     []string
	restores [][]string // the contents of every Restore
}

func (s *listSM) Apply(e raft.Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, string(e.Data))
	return e.Index
}

func (s *listSM) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cmds)
}

type listSnapshot []string

func (l listSnapshot) WriteTo(w io.Writer) (int64, error) {
	var b []byte
	for _, c := range l {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	n, err := w.Write(b)
	return int64(n), err
}
func (listSnapshot) Release() {}

func (s *listSM) Snapshot() (raft.Snapshot, error) { return listSnapshot(s.commands()), nil }

func (s *listSM) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var cmds []string
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("listSM: corrupt snapshot")
		}
		cmds = append(cmds, string(b[k:k+int(n)]))
		b = b[k+int(n):]
	}
	s.mu.Lock()
	s.cmds = cmds
	s.restores = append(s.restores, slices.Clone(cmds))
	s.mu.Unlock()
	return nil
}

// tcpRaftCluster is a cluster of raft.Nodes talking over TCP on loopback.
type tcpRaftCluster struct {
	t      testing.TB
	peers  []raft.Server
	trCfg  func(raft.NodeID) tcptransport.Config
	rafCfg func(raft.NodeID) raft.Config
	nodes  map[raft.NodeID]*raft.Node
	sms    map[raft.NodeID]*listSM
	stores map[raft.NodeID]*raft.MemoryStorage
	trs    map[raft.NodeID]*tcptransport.Transport
}

func newTCPRaftCluster(t testing.TB, n int, trCfg func(raft.NodeID) tcptransport.Config, tweak func(*raft.Config)) *tcpRaftCluster {
	c := &tcpRaftCluster{t: t, trCfg: trCfg, nodes: map[raft.NodeID]*raft.Node{}, sms: map[raft.NodeID]*listSM{},
		stores: map[raft.NodeID]*raft.MemoryStorage{}, trs: map[raft.NodeID]*tcptransport.Transport{}}
	c.rafCfg = func(id raft.NodeID) raft.Config {
		cfg := raft.DefaultConfig()
		cfg.ID = id
		cfg.Peers = c.peers
		if tweak != nil {
			tweak(&cfg)
		}
		return cfg
	}
	for i := 1; i <= n; i++ {
		id := raft.NodeID(i)
		c.trs[id] = listen(t, "", trCfg(id))
		c.peers = append(c.peers, raft.Server{ID: id, Addr: c.trs[id].Addr().String()})
		c.stores[id] = raft.NewMemoryStorage()
	}
	for i := 1; i <= n; i++ {
		c.start(raft.NodeID(i), c.trs[raft.NodeID(i)])
	}
	t.Cleanup(c.stopAll)
	return c
}

// start runs node id over tr (or a new transport on its old address).
func (c *tcpRaftCluster) start(id raft.NodeID, tr *tcptransport.Transport) {
	c.t.Helper()
	if tr == nil {
		tr = listen(c.t, c.addr(id), c.trCfg(id))
	}
	c.trs[id] = tr
	sm := &listSM{}
	nd, err := raft.NewNode(c.rafCfg(id), sm, c.stores[id], tr)
	if err != nil {
		c.t.Fatalf("node %d: %v", id, err)
	}
	c.nodes[id], c.sms[id] = nd, sm
}

func (c *tcpRaftCluster) addr(id raft.NodeID) string {
	for _, s := range c.peers {
		if s.ID == id {
			return s.Addr
		}
	}
	return ""
}

func (c *tcpRaftCluster) stop(id raft.NodeID) {
	if nd := c.nodes[id]; nd != nil {
		nd.Stop()
		delete(c.nodes, id)
	}
}

func (c *tcpRaftCluster) stopAll() {
	for id := range c.nodes {
		c.stop(id)
	}
}

// waitLeader waits until every running node knows the same leader.
func (c *tcpRaftCluster) waitLeader() raft.NodeID {
	c.t.Helper()
	var lead raft.NodeID
	eventually(c.t, 30*time.Second, "a leader all nodes agree on", func() bool {
		lead = raft.None
		for _, nd := range c.nodes {
			l := nd.Leader()
			if l == raft.None || (lead != raft.None && l != lead) {
				return false
			}
			lead = l
		}
		_, running := c.nodes[lead]
		return running
	})
	return lead
}

// propose commits cmd through whichever node leads, retrying on leader
// changes.
func (c *tcpRaftCluster) propose(cmd string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lead := c.waitLeader()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.nodes[lead].Propose(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("propose %q: %v", cmd, err)
		}
	}
}

// waitApplied waits until every running node applied exactly want.
func (c *tcpRaftCluster) waitApplied(want []string) {
	c.t.Helper()
	eventually(c.t, 30*time.Second, fmt.Sprintf("%d commands applied on every node", len(want)), func() bool {
		for _, sm := range c.sms {
			if !slices.Equal(sm.commands(), want) {
				return false
			}
		}
		return true
	})
}

func clusterTransportConfig(tlsFor func(raft.NodeID) *tls.Config) func(raft.NodeID) tcptransport.Config {
	return func(id raft.NodeID) tcptransport.Config {
		cfg := testConfig(id, nil)
		if tlsFor != nil {
			cfg.TLS = tlsFor(id)
		}
		return cfg
	}
}

// tlsForMode returns each node's TLS config, signed by one fresh cluster
// CA, for nodes 1..n when mode is "tls", and nil (plain TCP) otherwise.
func tlsForMode(t *testing.T, mode string, n int) func(raft.NodeID) *tls.Config {
	if mode != "tls" {
		return nil
	}
	ca := newCA(t, clusterID)
	certs := map[raft.NodeID]*tls.Config{}
	for id := raft.NodeID(1); id <= raft.NodeID(n); id++ {
		certs[id] = nodeTLS(t, ca, id)
	}
	return func(id raft.NodeID) *tls.Config { return certs[id] }
}

func TestClusterOverTCP(t *testing.T) {
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			tlsFor := tlsForMode(t, mode, 3)
			c := newTCPRaftCluster(t, 3, clusterTransportConfig(tlsFor), nil)
			var want []string
			for i := range 20 {
				cmd := fmt.Sprintf("cmd-%d", i)
				c.propose(cmd)
				want = append(want, cmd)
			}
			c.waitApplied(want)
			for id, tr := range c.trs {
				s := tr.Stats()
				if s.MessagesSent == 0 || s.MessagesReceived == 0 || s.BytesSent == 0 || s.BytesReceived == 0 {
					t.Errorf("node %d stats show no traffic: %+v", id, s)
				}
			}
			c.stopAll()
		})
	}
}

// TestRestartedNodeCatchesUp stops a follower (closing its transport and
// listener), commits entries without it, and restarts it on the same
// address: it must catch up, through the log or, with aggressive
// compaction, through a snapshot sent over TCP.
func TestRestartedNodeCatchesUp(t *testing.T) {
	for _, mode := range []string{"log", "snapshot"} {
		t.Run(mode, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			var tweak func(*raft.Config)
			if mode == "snapshot" {
				tweak = func(c *raft.Config) { c.SnapshotThreshold, c.TrailingEntries = 5, 1 }
			}
			c := newTCPRaftCluster(t, 3, clusterTransportConfig(nil), tweak)
			var want []string
			for i := range 5 {
				cmd := fmt.Sprintf("before-%d", i)
				c.propose(cmd)
				want = append(want, cmd)
			}
			c.waitApplied(want)
			lead := c.waitLeader()
			follower := raft.NodeID(1)
			if follower == lead {
				follower = 2
			}
			c.stop(follower)
			for i := range 30 {
				cmd := fmt.Sprintf("while-down-%d", i)
				c.propose(cmd)
				want = append(want, cmd)
			}
			c.start(follower, nil)
			c.propose("after")
			want = append(want, "after")
			c.waitApplied(want)
			if mode == "snapshot" {
				// Only the leader's snapshot, sent over TCP, can hold
				// commands committed while the follower was down.
				sm := c.sms[follower]
				sm.mu.Lock()
				viaSnap := slices.ContainsFunc(sm.restores, func(cmds []string) bool { return slices.Contains(cmds, "while-down-0") })
				sm.mu.Unlock()
				if !viaSnap {
					t.Errorf("follower caught up without receiving a snapshot; the test did not exercise MsgSnap over TCP")
				}
			}
			c.stopAll()
		})
	}
}
