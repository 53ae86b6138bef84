package tcptransport_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"go.uber.org/goleak"
)

// hungPeer is a fake node 2 that completes the handshake and then never
// reads: a hung process whose kernel still accepts connections.
type hungPeer struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newHungPeer(t *testing.T) *hungPeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungPeer{ln: ln}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			var fixed [23]byte
			if _, err := io.ReadFull(c, fixed[:]); err != nil {
				continue
			}
			rest := make([]byte, int(fixed[22])+1) // cluster ID, address length
			if _, err := io.ReadFull(c, rest); err != nil {
				continue
			}
			if _, err := io.ReadFull(c, make([]byte, rest[len(rest)-1])); err != nil {
				continue
			}
			c.Write([]byte{0})
			h.accepted.Add(1)
		}
	}()
	return h
}

func (h *hungPeer) close() {
	h.ln.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func snapChunk(from, to raft.NodeID, size int) raft.Message {
	return raft.Message{Type: raft.MsgSnap, From: from, To: to, Term: 1, SnapshotData: make([]byte, size)}
}

// TestHungPeerDoesNotDelayOthers floods a hung peer with 64 KiB snapshot
// chunks: Send never blocks, the hung peer's queue fills and drops, and
// heartbeats to another peer keep arriving while the hung peer's writer is
// stuck.
func TestHungPeerDoesNotDelayOthers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hung := newHungPeer(t)
	defer hung.close()
	cfg1 := testConfig(1, nil)
	cfg1.QueueSize = 32
	cfg1.WriteTimeout = time.Minute // stay stuck for the whole test
	tr1 := listen(t, "", cfg1)
	tr3 := listen(t, "", testConfig(3, nil))
	in3 := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: hung.ln.Addr().String()}, {ID: 3, Addr: tr3.Addr().String()}}
	for _, tr := range []*tcptransport.Transport{tr1, tr3} {
		tr.SetPeers(peers)
	}
	tr1.Start(func(raft.Message) {})
	tr3.Start(in3.deliver)

	// Flood until the writer to node 2 is stuck: its queue stays full and
	// no byte to node 2 has been written for 20 polls in a row. Every
	// Send returns at once, so flooding cannot hang the test.
	var lastBytes uint64
	stable := 0
	eventually(t, 30*time.Second, "writer to the hung peer stuck with a full queue", func() bool {
		for range 4 {
			tr1.Send([]raft.Message{snapChunk(1, 2, 64<<10)})
		}
		s := tr1.Stats().Peers[2]
		if s.Queued == cfg1.QueueSize && s.BytesSent == lastBytes && s.MessagesDropped > 0 {
			stable++
		} else {
			stable = 0
		}
		lastBytes = s.BytesSent
		return stable >= 20
	})
	// Heartbeats to node 3 still arrive while the writer to 2 is stuck.
	for i := range 20 {
		sendUntil(t, tr1, in3, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 3, Term: 1, Context: uint64(i + 1)}, 10*time.Second)
	}
	if s := tr1.Stats().Peers[2]; s.Queued != cfg1.QueueSize || s.BytesSent != lastBytes {
		t.Errorf("the writer to node 2 moved while heartbeats went to node 3 (the test assumption failed): %+v", s)
	}
	// Close interrupts the stuck write.
	closed := make(chan struct{})
	go func() { tr1.Close(); tr3.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hung on a stuck write")
	}
}

// TestWriteTimeoutDropsHungConnection checks that a connection whose peer
// stops reading is dropped after WriteTimeout, logged, and re-established.
func TestWriteTimeoutDropsHungConnection(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hung := newHungPeer(t)
	defer hung.close()
	log := newLogRecorder()
	cfg1 := testConfig(1, log.logger())
	cfg1.WriteTimeout = 200 * time.Millisecond
	tr1 := listen(t, "", cfg1)
	defer tr1.Close()
	tr1.SetPeers([]raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: hung.ln.Addr().String()}})
	tr1.Start(func(raft.Message) {})
	eventually(t, 30*time.Second, "reconnected after a write timeout", func() bool {
		tr1.Send([]raft.Message{snapChunk(1, 2, 256<<10)})
		return tr1.Stats().Reconnects >= 1 && hung.accepted.Load() >= 2
	})
	rec := log.waitLog(t, "connection to peer lost", "peer=2", "i/o timeout")
	t.Logf("logged: %s", rec)
}

func TestFrameTooLargeIsDroppedWithClearError(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log := newLogRecorder()
	cfg1 := testConfig(1, log.logger())
	cfg1.MaxFrameSize = 64 << 10
	tr1 := listen(t, "", cfg1)
	defer tr1.Close()
	tr2 := listen(t, "", testConfig(2, nil))
	defer tr2.Close()
	in2 := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}}
	tr1.SetPeers(peers)
	tr2.SetPeers(peers)
	tr1.Start(func(raft.Message) {})
	tr2.Start(in2.deliver)
	big := snapChunk(1, 2, 100<<10)
	big.Context = 99
	tr1.Send([]raft.Message{big})
	eventually(t, 10*time.Second, "oversized frame counted", func() bool { return tr1.Stats().FramesTooLarge == 1 })
	rec := log.waitLog(t, "dropping message", "more than Config.MaxFrameSize (65536)")
	t.Logf("logged: %s", rec)
	sendUntil(t, tr1, in2, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Context: 1}, 10*time.Second)
	if in2.has(func(m raft.Message) bool { return m.Context == 99 }) {
		t.Error("the oversized message was delivered")
	}
	var tl *tcptransport.FrameTooLargeError
	if !errors.As(error(&tcptransport.FrameTooLargeError{Size: 2, Max: 1}), &tl) || !strings.Contains(tl.Error(), "MaxFrameSize") {
		t.Error("FrameTooLargeError does not name MaxFrameSize")
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  tcptransport.Config
		want string
	}{
		{"no ID", tcptransport.Config{ClusterID: "c"}, "ID must be non-zero"},
		{"no cluster", tcptransport.Config{ID: 1}, "ClusterID must be 1 to 255 bytes"},
		{"long cluster", tcptransport.Config{ID: 1, ClusterID: strings.Repeat("x", 256)}, "ClusterID must be 1 to 255 bytes, got 256"},
		{"negative queue", tcptransport.Config{ID: 1, ClusterID: "c", QueueSize: -1}, "QueueSize must be positive"},
		{"negative timeout", tcptransport.Config{ID: 1, ClusterID: "c", ReadTimeout: -time.Second}, "ReadTimeout must be positive"},
		{"backoff order", tcptransport.Config{ID: 1, ClusterID: "c", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff (1ms) must not be less than MinBackoff (1s)"},
		{"huge frame", tcptransport.Config{ID: 1, ClusterID: "c", MaxFrameSize: 1 << 31}, "MaxFrameSize must fit in 31 bits"},
		{"advertise no port", tcptransport.Config{ID: 1, ClusterID: "c", AdvertiseAddr: "10.0.0.1"}, "AdvertiseAddr: address \"10.0.0.1\" is not host:port"},
		{"advertise unspecified", tcptransport.Config{ID: 1, ClusterID: "c", AdvertiseAddr: "0.0.0.0:7001"}, "AdvertiseAddr: address \"0.0.0.0:7001\" names no particular host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := tcptransport.Listen("127.0.0.1:0", tt.cfg)
			if err == nil {
				tr.Close()
				t.Fatalf("config accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	ca := newCA(t, "c")
	good := nodeTLS(t, ca, 1)
	noRoots := good.Clone()
	noRoots.RootCAs = nil
	insecure := good.Clone()
	insecure.InsecureSkipVerify = true
	noCert := good.Clone()
	noCert.Certificates = nil
	for _, c := range []struct {
		tls  *tls.Config
		want string
	}{
		{noRoots, "TLS.RootCAs must hold the cluster CA"},
		{insecure, "InsecureSkipVerify would accept any peer"},
		{noCert, "TLS needs this node's certificate"},
	} {
		_, err := tcptransport.Listen("127.0.0.1:0", tcptransport.Config{ID: 1, ClusterID: "c", TLS: c.tls})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("TLS config error %v, want it to say %q", err, c.want)
		}
	}
}

func TestLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr := listen(t, "", testConfig(1, nil))
	if err := tr.Start(nil); err == nil {
		t.Error("Start(nil) accepted")
	}
	if err := tr.Start(func(raft.Message) {}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(func(raft.Message) {}); err == nil {
		t.Error("second Start accepted")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := tr.Start(func(raft.Message) {}); !errors.Is(err, tcptransport.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	before := tr.Stats().MessagesDropped
	tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	tr.SetPeers([]raft.Server{{ID: 2, Addr: "127.0.0.1:1"}})
	if got := tr.Stats().MessagesDropped; got != before+1 {
		t.Errorf("Send after Close: dropped %d, want %d", got, before+1)
	}
	if _, err := net.Dial("tcp", tr.Addr().String()); err == nil {
		t.Error("listener still accepts after Close")
	}
}

func TestSetPeersFollowsAddressChange(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr1 := listen(t, "", testConfig(1, nil))
	defer tr1.Close()
	tr2 := listen(t, "", testConfig(2, nil))
	in2 := newInbox()
	tr1.SetPeers([]raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}})
	tr2.SetPeers(nil)
	tr1.Start(func(raft.Message) {})
	tr2.Start(in2.deliver)
	sendUntil(t, tr1, in2, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Context: 1}, 10*time.Second)
	tr2.Close()

	moved := listen(t, "", testConfig(2, nil))
	defer moved.Close()
	inMoved := newInbox()
	moved.Start(inMoved.deliver)
	tr1.SetPeers([]raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: moved.Addr().String()}})
	sendUntil(t, tr1, inMoved, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Context: 2}, 10*time.Second)
	if s := tr1.Stats().Peers[2]; s.Addr != moved.Addr().String() || !s.Connected {
		t.Errorf("peer stats after the move: %+v", s)
	}
}

// TestRemovedMemberIsCutOff removes node 2 from node 1's configuration:
// its open connection is closed and new ones are refused, both logged.
func TestRemovedMemberIsCutOff(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log1, log2 := newLogRecorder(), newLogRecorder()
	tr1 := listen(t, "", testConfig(1, log1.logger()))
	defer tr1.Close()
	tr2 := listen(t, "", testConfig(2, log2.logger()))
	defer tr2.Close()
	in1 := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}}
	tr1.SetPeers(peers)
	tr2.SetPeers(peers)
	tr1.Start(in1.deliver)
	tr2.Start(func(raft.Message) {})
	sendUntil(t, tr2, in1, raft.Message{Type: raft.MsgHeartbeat, From: 2, To: 1, Context: 1}, 10*time.Second)

	tr1.SetPeers(peers[:1])
	log1.waitLog(t, "closed incoming connection", "no longer a member")
	eventually(t, 10*time.Second, "node 2 refused as a non-member", func() bool {
		tr2.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 2, To: 1, Context: 2}})
		_, ok := log2.find("cannot connect to peer", "sender is not a member")
		return ok && log1.countReason("node 2 is not a member") > 0
	})
	if in1.has(func(m raft.Message) bool { return m.Context == 2 }) {
		t.Error("a removed member's message was delivered")
	}
}

// TestJoiningNodeAcceptsClusterPeers checks that a node with no
// configuration yet (waiting to be added) accepts members of its cluster.
func TestJoiningNodeAcceptsClusterPeers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	joiner := listen(t, "", testConfig(4, nil))
	defer joiner.Close()
	in := newInbox()
	joiner.SetPeers(nil)
	joiner.Start(in.deliver)
	tr1 := listen(t, "", testConfig(1, nil))
	defer tr1.Close()
	tr1.SetPeers([]raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 4, Addr: joiner.Addr().String()}})
	tr1.Start(func(raft.Message) {})
	sendUntil(t, tr1, in, raft.Message{Type: raft.MsgApp, From: 1, To: 4, Term: 2, Context: 7}, 10*time.Second)
}

func TestStatsAddUp(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr1 := listen(t, "", testConfig(1, nil))
	defer tr1.Close()
	tr2 := listen(t, "", testConfig(2, nil))
	defer tr2.Close()
	in2 := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}}
	tr1.SetPeers(peers)
	tr2.SetPeers(peers)
	tr1.Start(func(raft.Message) {})
	tr2.Start(in2.deliver)
	const n = 50
	for i := range n {
		sendUntil(t, tr1, in2, raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 1, Context: uint64(i + 1),
			Entries: []raft.Entry{{Index: uint64(i + 1), Term: 1, Data: []byte("payload")}}}, 10*time.Second)
	}
	eventually(t, 10*time.Second, "sender and receiver counters agree", func() bool {
		s1, s2 := tr1.Stats(), tr2.Stats()
		return s1.MessagesSent == s2.MessagesReceived && s1.BytesSent == s2.BytesReceived
	})
	s1, s2 := tr1.Stats(), tr2.Stats()
	if s1.MessagesSent < n || s1.Peers[2].MessagesSent != s1.MessagesSent || s1.Peers[2].BytesSent != s1.BytesSent {
		t.Errorf("sender stats: %+v", s1)
	}
	if s2.ConnectionsAccepted != 1 || s2.ConnectionsRejected != 0 || s2.InboundConnections != 1 {
		t.Errorf("receiver stats: %+v", s2)
	}
	if !s1.Peers[2].Connected {
		t.Errorf("peer 2 not reported connected: %+v", s1.Peers[2])
	}
}

// TestStartInlineSaysWhenMoreFollow checks StartInline: messages arrive
// whole and in order, and more is false on the last message of a batch, so
// a node waiting for it to handle the batch is never left waiting.
func TestStartInlineSaysWhenMoreFollow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr1 := listen(t, "", testConfig(1, nil))
	tr2 := listen(t, "", testConfig(2, nil))
	defer tr1.Close()
	defer tr2.Close()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}}
	tr1.SetPeers(peers)
	tr2.SetPeers(peers)
	if err := tr1.Start(func(raft.Message) {}); err != nil {
		t.Fatal(err)
	}
	type got struct {
		m    raft.Message
		more bool
	}
	var mu sync.Mutex
	var seen []got
	if err := tr2.StartInline(func(m raft.Message, more bool) {
		mu.Lock()
		seen = append(seen, got{m, more})
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := tr2.StartInline(func(raft.Message, bool) {}); err == nil {
		t.Fatal("a second StartInline succeeded")
	}
	const n = 50
	batch := make([]raft.Message, n)
	for i := range batch {
		batch[i] = raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 1, Context: uint64(i + 1)}
	}
	tr1.Send(batch)
	eventually(t, 10*time.Second, "the batch delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n
	})
	mu.Lock()
	defer mu.Unlock()
	for i, g := range seen {
		if g.m.Context != uint64(i+1) {
			t.Fatalf("message %d has context %d: out of order", i, g.m.Context)
		}
	}
	if seen[n-1].more {
		t.Fatal("the last message of the batch said more would follow")
	}
	// The batch left in one write, so the reader had the rest of it
	// buffered when it delivered the first.
	if !slices.ContainsFunc(seen, func(g got) bool { return g.more }) {
		t.Fatal("no message of a batch written at once was delivered with more set")
	}
}
