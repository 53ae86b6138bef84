package tcptransport_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"go.uber.org/goleak"
)

// The wire format, written out independently of the package so the tests
// check it: hello, one status byte back, then frames of
// length(4) crc32c(4) payload.
func helloBytes(from, to raft.NodeID, cluster string) []byte {
	return helloBytesAddr(from, to, cluster, "")
}

// helloBytesAddr is a version 2 hello advertising addr.
func helloBytesAddr(from, to raft.NodeID, cluster, addr string) []byte {
	b := []byte{'R', 'F', 'T', 'T', 2, 0}
	b = binary.BigEndian.AppendUint64(b, uint64(from))
	b = binary.BigEndian.AppendUint64(b, uint64(to))
	b = append(b, byte(len(cluster)))
	b = append(b, cluster...)
	b = append(b, byte(len(addr)))
	return append(b, addr...)
}

func frameBytes(payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)))
	return append(b, payload...)
}

func encode(t testing.TB, m raft.Message) []byte {
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// victim is node 1 under attack, with node 2 as a live peer whose
// messages must keep arriving. Members are 1, 2 and 3.
type victim struct {
	tr   *tcptransport.Transport
	in   *inbox
	peer *tcptransport.Transport
	log  *logRecorder
	addr string
}

func hostileConfig(id raft.NodeID, log *logRecorder) tcptransport.Config {
	cfg := testConfig(id, log.logger())
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.ReadTimeout = 300 * time.Millisecond
	cfg.IdleTimeout = time.Second
	cfg.MaxFrameSize = 1 << 20
	return cfg
}

func newVictim(t *testing.T) *victim {
	v := &victim{in: newInbox(), log: newLogRecorder()}
	v.tr = listen(t, "", hostileConfig(1, v.log))
	v.addr = v.tr.Addr().String()
	peerCfg := hostileConfig(2, newLogRecorder()) // keepalives within node 1's IdleTimeout
	peerCfg.Logger = nil
	v.peer = listen(t, "", peerCfg)
	peers := []raft.Server{{ID: 1, Addr: v.addr}, {ID: 2, Addr: v.peer.Addr().String()}, {ID: 3, Addr: "127.0.0.1:1"}}
	v.tr.SetPeers(peers)
	v.peer.SetPeers(peers)
	if err := v.tr.Start(v.in.deliver); err != nil {
		t.Fatal(err)
	}
	if err := v.peer.Start(func(raft.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.tr.Close(); v.peer.Close() })
	return v
}

var probeSeq atomic.Uint64

// stillServing checks that node 1 still receives node 2's messages.
func (v *victim) stillServing(t testing.TB) {
	t.Helper()
	seq := probeSeq.Add(1)
	sendUntil(t, v.peer, v.in, raft.Message{Type: raft.MsgHeartbeat, From: 2, To: 1, Term: 1, Context: 1<<32 + seq}, 10*time.Second)
}

// attack is one kind of bad connection: what the attacker does, and the
// reason node 1 must log when it closes the connection.
type attack struct {
	name    string
	reason  string
	do      func(t testing.TB, c net.Conn)
	asNode3 bool // the attacker completes the handshake as node 3
}

func handshake(t testing.TB, c net.Conn, from raft.NodeID) {
	if _, err := c.Write(helloBytes(from, 1, clusterID)); err != nil {
		t.Errorf("write hello: %v", err)
		return
	}
	var st [1]byte
	if _, err := io.ReadFull(c, st[:]); err != nil || st[0] != 0 {
		t.Errorf("handshake as node %d refused: status %d err %v", from, st[0], err)
	}
}

// drip writes b one byte at a time in the background until the
// connection fails.
func drip(c net.Conn, b []byte, every time.Duration) {
	go func() {
		for _, x := range b {
			if _, err := c.Write([]byte{x}); err != nil {
				return
			}
			time.Sleep(every) // the attacker's pacing, not a wait for an outcome
		}
	}()
}

var attacks = []attack{
	{"garbage", "bad magic", func(t testing.TB, c net.Conn) {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: raft\r\n\r\n"))
	}, false},
	{"truncated-hello", "closed mid-handshake", func(t testing.TB, c net.Conn) {
		c.Write(helloBytes(3, 1, clusterID)[:10])
		c.(*net.TCPConn).CloseWrite()
	}, false},
	{"wrong-cluster", `wrong cluster ID "other"`, func(t testing.TB, c net.Conn) {
		c.Write(helloBytes(3, 1, "other"))
	}, false},
	{"non-member", "node 9 is not a member", func(t testing.TB, c net.Conn) {
		c.Write(helloBytes(9, 1, clusterID))
	}, false},
	{"wrong-receiver", "addressed to node 5", func(t testing.TB, c net.Conn) {
		c.Write(helloBytes(3, 5, clusterID))
	}, false},
	{"bad-version", "unsupported protocol version 7", func(t testing.TB, c net.Conn) {
		h := helloBytes(3, 1, clusterID)
		h[4] = 7
		c.Write(h)
	}, false},
	{"old-version", "unsupported protocol version 1 (want 2)", func(t testing.TB, c net.Conn) {
		h := helloBytes(3, 1, clusterID)
		h[4] = 1
		c.Write(h[:len(h)-1]) // version 1 had no address field
		// The listener reads a version 1 hello whole and answers why it
		// refuses, so an old node logs a clear reason.
		var st [1]byte
		if _, err := io.ReadFull(c, st[:]); err != nil || st[0] != 1 {
			t.Errorf("version 1 hello answered status %d, err %v; want 1 (unsupported version)", st[0], err)
		}
	}, false},
	{"unknown-flags", "unknown flags 0x80", func(t testing.TB, c net.Conn) {
		h := helloBytes(3, 1, clusterID)
		h[5] = 0x80
		c.Write(h)
	}, false},
	{"truncated-addr", "closed mid-handshake", func(t testing.TB, c net.Conn) {
		h := helloBytesAddr(3, 1, clusterID, "127.0.0.1:7003")
		c.Write(h[:len(h)-4])
		c.(*net.TCPConn).CloseWrite()
	}, false},
	{"addr-without-port", "bad advertised address", func(t testing.TB, c net.Conn) {
		c.Write(helloBytesAddr(3, 1, clusterID, "127.0.0.1"))
	}, false},
	{"addr-port-zero", "want 1 to 65535", func(t testing.TB, c net.Conn) {
		c.Write(helloBytesAddr(3, 1, clusterID, "127.0.0.1:0"))
	}, false},
	{"addr-unspecified", "names no particular host", func(t testing.TB, c net.Conn) {
		c.Write(helloBytesAddr(3, 1, clusterID, "0.0.0.0:7003"))
	}, false},
	{"addr-control-bytes", "not printable ASCII", func(t testing.TB, c net.Conn) {
		c.Write(helloBytesAddr(3, 1, clusterID, "evil\n:7003"))
	}, false},
	{"oversized-length", "exceeds MaxFrameSize", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		c.Write([]byte{0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0})
	}, true},
	{"truncated-frame", "truncated frame: connection closed after 10 of 1000 bytes", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		c.Write(frameBytes(make([]byte, 1000))[:8+10])
		c.(*net.TCPConn).CloseWrite()
	}, true},
	{"truncated-header", "truncated frame header", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		c.Write([]byte{0, 0, 1})
		c.(*net.TCPConn).CloseWrite()
	}, true},
	{"bad-checksum", "checksum mismatch", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		f := frameBytes(encode(t, raft.Message{Type: raft.MsgHeartbeat, From: 3, To: 1}))
		f[len(f)-1] ^= 1
		c.Write(f)
	}, true},
	{"undecodable", "undecodable message", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		c.Write(frameBytes([]byte{1, 200, 1, 1}))
	}, true},
	{"spoofed-sender", "message 2->1 on the connection of node 3", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		c.Write(frameBytes(encode(t, raft.Message{Type: raft.MsgHeartbeat, From: 2, To: 1, Term: 99, Context: 666})))
	}, true},
	{"silent", "handshake timeout", func(t testing.TB, c net.Conn) {}, false},
	{"slowloris-hello", "handshake timeout", func(t testing.TB, c net.Conn) {
		drip(c, helloBytes(3, 1, clusterID), 40*time.Millisecond)
	}, false},
	{"slowloris-frame", "frame stalled", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
		drip(c, frameBytes(make([]byte, 200<<10)), 40*time.Millisecond)
	}, true},
	{"idle-after-hello", "idle timeout", func(t testing.TB, c net.Conn) {
		handshake(t, c, 3)
	}, true},
}

// assault opens one connection to addr, runs a, and waits for node 1 to
// close the connection.
func assault(t testing.TB, addr string, a attack) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("%s: dial: %v", a.name, err)
		return
	}
	defer c.Close()
	a.do(t, c)
	// The victim must close the connection by itself; a generous bound
	// only keeps a broken transport from hanging the test.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: node 1 kept the connection open", a.name)
	}
}

func TestBadConnectionsAreClosedWithReason(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	v := newVictim(t)
	v.stillServing(t)
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			before := v.tr.Stats().ConnectionsRejected
			logged := v.log.countReason(a.reason)
			assault(t, v.addr, a)
			eventually(t, 10*time.Second, fmt.Sprintf("a log record with reason %q", a.reason), func() bool {
				return v.log.countReason(a.reason) > logged
			})
			if a.asNode3 {
				rec, _ := v.log.find("closed incoming connection", a.reason, "peer=3")
				t.Logf("logged: %s", rec)
			}
			eventually(t, 10*time.Second, "rejection counted", func() bool { return v.tr.Stats().ConnectionsRejected > before })
			v.stillServing(t)
		})
	}
	for _, m := range v.in.all() {
		if m.From != 2 {
			t.Errorf("an attacker's message reached the node: %v", m)
		}
	}
	v.tr.Close()
	v.peer.Close()
}

// badConnCount is how many bad connections TestManyBadConnectionsLeakNothing
// opens: RAFT_TCP_BAD_CONNS, default 10000 (about 2s, 5s under -race, on
// a 2-core machine).
func badConnCount(t *testing.T) int {
	if s := os.Getenv("RAFT_TCP_BAD_CONNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("RAFT_TCP_BAD_CONNS=%q: want a positive integer", s)
		}
		return n
	}
	return 10000
}

// TestManyBadConnectionsLeakNothing opens many bad connections of the fast
// kinds, several at a time, and checks that every one is closed, counted
// and logged, that the node keeps serving, and that goroutines and heap
// return to their baseline.
func TestManyBadConnectionsLeakNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	n := badConnCount(t)
	v := newVictim(t)
	v.stillServing(t)
	var fast []attack
	for _, a := range attacks {
		switch a.name {
		case "silent", "slowloris-hello", "slowloris-frame", "idle-after-hello":
		default:
			fast = append(fast, a)
		}
	}
	// Warm up every path once so lazily allocated runtime and TLS state
	// is part of the baseline.
	for _, a := range fast {
		assault(t, v.addr, a)
	}
	eventually(t, 10*time.Second, "warm-up connections closed", func() bool { return v.tr.Stats().InboundConnections == 1 })
	baseGoroutines, baseHeap := settle()
	before := v.tr.Stats()
	closedBefore := v.log.countMsg("closed incoming connection")
	replacedBefore := v.log.countReason("replaced by a newer connection")

	const workers = 8
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || t.Failed() {
					return
				}
				assault(t, v.addr, fast[i%len(fast)])
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Each bad connection is closed once with a logged reason: rejected
	// for what it sent, or (attackers posing as the same node at the
	// same time) replaced by a newer connection from that node.
	eventually(t, 20*time.Second, fmt.Sprintf("all %d bad connections closed with a logged reason", n), func() bool {
		return v.log.countMsg("closed incoming connection")-closedBefore == n
	})
	rejected := v.tr.Stats().ConnectionsRejected - before.ConnectionsRejected
	replaced := v.log.countReason("replaced by a newer connection") - replacedBefore
	if rejected+uint64(replaced) != uint64(n) {
		t.Errorf("%d connections rejected and %d replaced, want %d in all", rejected, replaced, n)
	}
	v.stillServing(t)
	if s := v.tr.Stats(); s.InboundConnections != 1 {
		t.Errorf("%d inbound connections open, want 1 (node 2's)", s.InboundConnections)
	}
	var goroutines int
	var heap uint64
	eventually(t, 20*time.Second, "goroutines and heap back to baseline", func() bool {
		goroutines, heap = settle()
		return goroutines <= baseGoroutines+2 && heap <= baseHeap+2<<20
	})
	t.Logf("%d bad connections: goroutines %d -> %d, heap %d KiB -> %d KiB", n, baseGoroutines, goroutines, baseHeap>>10, heap>>10)
	v.tr.Close()
	v.peer.Close()
}

// settle collects garbage and reports goroutines and live heap bytes.
func settle() (int, uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// countMsg counts records with message msg.
func (h *logRecorder) countMsg(msg string) int {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	n := 0
	for k, c := range h.st.counts {
		if strings.HasPrefix(k, msg+": ") {
			n += c
		}
	}
	return n
}
