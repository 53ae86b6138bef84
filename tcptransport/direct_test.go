package tcptransport_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
)

// fakePeer is node 2 played by the test on a plain listener: it accepts
// node 1's connections and answers their hello, so the test controls when
// (and whether) frames are read.
type fakePeer struct {
	ln    net.Listener
	conns chan net.Conn
}

func newFakePeer(t *testing.T) *fakePeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePeer{ln: ln, conns: make(chan net.Conn, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(f.conns)
				return
			}
			f.conns <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

// accept returns node 1's next connection, its hello read and accepted.
func (f *fakePeer) accept(t *testing.T) net.Conn {
	t.Helper()
	var c net.Conn
	select {
	case c = <-f.conns:
	case <-time.After(10 * time.Second):
		t.Fatal("node 1 did not connect")
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// magic(4) version(1) flags(1) from(8) to(8), then two
	// length-prefixed strings: cluster ID and advertised address.
	fixed := make([]byte, 22)
	if _, err := io.ReadFull(c, fixed); err != nil {
		t.Fatalf("reading hello: %v", err)
	}
	for range 2 {
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			t.Fatalf("reading hello: %v", err)
		}
		if _, err := io.ReadFull(c, make([]byte, n[0])); err != nil {
			t.Fatalf("reading hello: %v", err)
		}
	}
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatalf("answering hello: %v", err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// readFrame reads and checks one frame.
func readFrame(r io.Reader) (raft.Message, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return raft.Message{}, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
	if _, err := io.ReadFull(r, body); err != nil {
		return raft.Message{}, err
	}
	if crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)) != binary.BigEndian.Uint32(hdr[4:]) {
		return raft.Message{}, io.ErrUnexpectedEOF
	}
	var m raft.Message
	err := m.UnmarshalBinary(body)
	return m, err
}

func appendMsg(i uint64, size int) raft.Message {
	return raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 1, Index: i,
		Entries: []raft.Entry{{Index: i, Term: 1, Data: bytes.Repeat([]byte{byte(i)}, size)}}}
}

// startSender starts node 1's transport (cfg, or the test default if nil)
// with the fake node 2 as its peer.
func startSender(t *testing.T, peer *fakePeer, cfg *tcptransport.Config) *tcptransport.Transport {
	if cfg == nil {
		c := testConfig(1, nil)
		cfg = &c
	}
	tr := listen(t, "", *cfg)
	t.Cleanup(func() { tr.Close() })
	tr.SetPeers([]raft.Server{{ID: 1, Addr: tr.Addr().String()}, {ID: 2, Addr: peer.ln.Addr().String()}})
	if err := tr.Start(func(raft.Message) {}); err != nil {
		t.Fatal(err)
	}
	return tr
}

// Send writes small batches to an idle connection itself. When the
// receiver stops reading, the socket buffer fills, a direct write is cut
// short and the peer's goroutine must finish it before anything else:
// every frame must arrive whole and in order, and only what the full queue
// refused may be missing.
func TestDirectWritesKeepOrderWhenTheSocketFills(t *testing.T) {
	skipWithoutDirectWrites(t)
	peer := newFakePeer(t)
	tr := startSender(t, peer, nil)
	tr.Send([]raft.Message{appendMsg(1, 4096)})
	conn := peer.accept(t)
	eventually(t, 10*time.Second, "first message written", func() bool { return tr.Stats().MessagesSent == 1 })

	const n = 4000 // 16 MiB: more than loopback socket buffers hold
	for i := uint64(2); i <= n; i++ {
		tr.Send([]raft.Message{appendMsg(i, 4096)})
	}
	direct, partial := tr.DirectWrites(2)
	if direct == 0 || partial == 0 {
		t.Fatalf("%d direct writes, %d partial: the test did not exercise a cut-short direct write", direct, partial)
	}
	want := n - int(tr.Stats().MessagesDropped)
	if want == n {
		t.Fatal("nothing was dropped: the queue never filled, so the socket never stayed full")
	}
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var last uint64
	for got := 0; got < want; got++ {
		m, err := readFrame(r)
		if err != nil {
			t.Fatalf("frame %d of %d (after index %d): %v", got+1, want, last, err)
		}
		if m.Index <= last {
			t.Fatalf("index %d arrived after %d", m.Index, last)
		}
		if len(m.Entries) != 1 || !bytes.Equal(m.Entries[0].Data, bytes.Repeat([]byte{byte(m.Index)}, 4096)) {
			t.Fatalf("message %d arrived damaged", m.Index)
		}
		last = m.Index
	}
	eventually(t, 10*time.Second, "all counted as sent", func() bool {
		s := tr.Stats()
		return s.MessagesSent == uint64(want) && s.Peers[2].Queued == 0
	})
}

// A direct write that fails (the peer closed the connection) makes the
// peer's goroutine drop the connection and dial again; later messages
// arrive on the new one.
func TestDirectWriteFailureReconnects(t *testing.T) {
	skipWithoutDirectWrites(t)
	peer := newFakePeer(t)
	tr := startSender(t, peer, nil)
	tr.Send([]raft.Message{appendMsg(1, 8)})
	first := peer.accept(t)
	eventually(t, 10*time.Second, "connection up", func() bool { return tr.Stats().Peers[2].Connected })
	first.(*net.TCPConn).SetLinger(0) // reset, so the next writes fail at once
	first.Close()

	done := make(chan struct{})
	defer close(done)
	go func() {
		for i := uint64(2); ; i++ {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			tr.Send([]raft.Message{appendMsg(i, 8)})
		}
	}()
	second := peer.accept(t)
	got := make(chan raft.Message, 1)
	go func() {
		m, err := readFrame(bufio.NewReader(second))
		if err == nil {
			got <- m
		}
	}()
	select {
	case m := <-got:
		if m.Type != raft.MsgApp || len(m.Entries) != 1 || m.Entries[0].Index != m.Index {
			t.Fatalf("damaged message on the new connection: %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing arrived on the new connection")
	}
	if s := tr.Stats(); s.Reconnects == 0 {
		t.Fatalf("Reconnects = 0 after a lost connection: %+v", s)
	}
	if direct, _ := tr.DirectWrites(2); direct == 0 {
		t.Fatal("no direct write was made: the test did not exercise a failing one")
	}
}

func skipWithoutDirectWrites(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("direct writes are used on Unix systems only")
	}
}

// The write deadline is renewed only by the peer's goroutine; after a
// quiet spell longer than WriteTimeout it has passed, and a direct write
// must leave the message to that goroutine rather than fail.
func TestDirectWriteAfterDeadlinePassed(t *testing.T) {
	skipWithoutDirectWrites(t)
	peer := newFakePeer(t)
	cfg := testConfig(1, nil)
	cfg.WriteTimeout = 20 * time.Millisecond
	tr := startSender(t, peer, &cfg)
	tr.Send([]raft.Message{appendMsg(1, 8)})
	conn := peer.accept(t)
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := uint64(1); i <= 3; i++ {
		if i > 1 {
			time.Sleep(4 * cfg.WriteTimeout)
			tr.Send([]raft.Message{appendMsg(i, 8)})
		}
		m, err := readFrame(r)
		if err != nil || m.Index != i {
			t.Fatalf("message %d: got index %d, err %v", i, m.Index, err)
		}
	}
	if s := tr.Stats(); s.Reconnects != 0 || s.MessagesDropped != 0 {
		t.Fatalf("a passed deadline cost a connection: %+v", s)
	}
	if direct, _ := tr.DirectWrites(2); direct < 2 {
		t.Fatalf("%d direct writes: the messages after the deadline passed did not try the direct path", direct)
	}
}
