package raft

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// counterSM is a test state machine: it records applied commands in order
// and returns the index as the result.
type counterSM struct {
	mu   sync.Mutex
	cmds [][]byte
	last uint64
}

func (s *counterSM) Apply(e Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, e.Data)
	s.last = e.Index
	return e.Index
}

func (s *counterSM) Snapshot() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	binary.Write(&buf, binary.BigEndian, uint64(len(s.cmds)))
	for _, c := range s.cmds {
		binary.Write(&buf, binary.BigEndian, uint32(len(c)))
		buf.Write(c)
	}
	return bytesSnapshot(buf.Bytes()), nil
}

func (s *counterSM) Restore(r io.Reader) error {
	var n uint64
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err
	}
	cmds := make([][]byte, 0, n)
	for range n {
		var l uint32
		if err := binary.Read(r, binary.BigEndian, &l); err != nil {
			return err
		}
		c := make([]byte, l)
		if _, err := io.ReadFull(r, c); err != nil {
			return err
		}
		cmds = append(cmds, c)
	}
	s.mu.Lock()
	s.cmds = cmds
	s.mu.Unlock()
	return nil
}

func (s *counterSM) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.cmds))
	for i, c := range s.cmds {
		out[i] = string(c)
	}
	return out
}

type bytesSnapshot []byte

func (b bytesSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}
func (b bytesSnapshot) Release() {}

// testCluster is a cluster of Nodes on an in-memory Network.
type testCluster struct {
	t      testing.TB
	net    *Network
	cfg    Config
	peers  []Server
	nodes  map[NodeID]*Node
	sms    map[NodeID]*counterSM
	stores map[NodeID]*MemoryStorage
}

func testConfig(id NodeID) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.TickInterval = 2 * time.Millisecond
	cfg.ElectionTicks = 20
	cfg.HeartbeatTicks = 2
	return cfg
}

func newTestCluster(t testing.TB, n int, tweak func(*Config)) *testCluster {
	c := &testCluster{t: t, net: NewNetwork(1), nodes: map[NodeID]*Node{}, sms: map[NodeID]*counterSM{}, stores: map[NodeID]*MemoryStorage{}}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, Server{ID: NodeID(i)})
	}
	c.cfg = testConfig(0)
	if tweak != nil {
		tweak(&c.cfg)
	}
	for i := 1; i <= n; i++ {
		c.stores[NodeID(i)] = NewMemoryStorage()
		c.start(NodeID(i))
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *testCluster) start(id NodeID) *Node {
	cfg := c.cfg
	cfg.ID = id
	cfg.Peers = c.peers
	sm := &counterSM{}
	nd, err := NewNode(cfg, sm, c.stores[id], c.net.Transport(id))
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id], c.sms[id] = nd, sm
	return nd
}

func (c *testCluster) stop(id NodeID) {
	if nd := c.nodes[id]; nd != nil {
		nd.Stop()
		delete(c.nodes, id)
	}
}

func (c *testCluster) stopAll() {
	for id := range c.nodes {
		c.stop(id)
	}
	c.net.Close()
}

// waitLeader waits until all running nodes except those in skip agree on
// one leader, and returns it.
func (c *testCluster) waitLeader(timeout time.Duration) NodeID {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		// The leader of the highest term must be known to every running
		// member of its configuration (nodes waiting to join, or removed,
		// are not asked).
		var lead Status
		statuses := make(map[NodeID]Status, len(c.nodes))
		for id, nd := range c.nodes {
			s := nd.Status()
			statuses[id] = s
			if s.Role == Leader && s.Term >= lead.Term {
				lead = s
			}
		}
		ok := lead.ID != None
		for id, s := range statuses {
			if _, member := lead.Config.Server(id); ok && member && s.Leader != lead.ID {
				ok = false
			}
		}
		if ok {
			return lead.ID
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.t.Fatalf("no agreed leader within %v", timeout)
	return None
}

func (c *testCluster) propose(id NodeID, cmd string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.nodes[id].Propose(ctx, []byte(cmd))
}

// proposeOnLeader retries until some leader accepts cmd.
func (c *testCluster) mustPropose(cmd string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		lead := c.waitLeader(10 * time.Second)
		if _, err := c.propose(lead, cmd); err == nil {
			return
		}
	}
	c.t.Fatalf("could not commit %q", cmd)
}

// waitApplied waits until every running node applied the commands want.
func (c *testCluster) waitApplied(want []string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var bad string
		for id := range c.nodes {
			got := c.sms[id].commands()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				ok = false
				bad = fmt.Sprintf("node %d has %v", id, got)
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("want %v applied everywhere; %s", want, bad)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
