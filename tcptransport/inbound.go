package tcptransport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/raftgo/raft"
)

// readChunk is how much of a frame body must arrive within ReadTimeout: a
// peer trickling bytes slower than that is disconnected.
const readChunk = 64 << 10

// inConn is an accepted connection.
type inConn struct {
	raw    net.Conn
	remote string

	mu     sync.Mutex
	reason string // why we closed it ourselves, if we did
}

// closeWithReason closes the connection, recording why for the serving
// goroutine's log record.
func (c *inConn) closeWithReason(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	c.mu.Unlock()
	c.raw.Close()
}

func (c *inConn) close() { c.raw.Close() }

func (c *inConn) closedBecause() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// acceptLoop accepts connections until the listener closes.
func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		raw, err := t.ln.Accept()
		if err != nil {
			if t.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: wait and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-t.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		ic := &inConn{raw: raw, remote: raw.RemoteAddr().String()}
		if t.pending.Load() >= int64(t.cfg.MaxPendingHandshakes) {
			raw.Close()
			t.reject(ic, raft.None, "too many connections in handshake (MaxPendingHandshakes)")
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			raw.Close()
			return
		}
		t.inbound[ic] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		t.pending.Add(1)
		go t.serve(ic)
	}
}

// reject counts and logs a connection closed for cause.
func (t *Transport) reject(ic *inConn, from raft.NodeID, reason string) {
	t.stats.rejected.Add(1)
	if t.log.enabled(slog.LevelWarn) {
		attrs := []any{"remote", ic.remote, "reason", reason}
		if from != raft.None {
			attrs = append(attrs, "peer", uint64(from))
		}
		t.log.Warn("closed incoming connection", attrs...)
	}
}

// serve runs one accepted connection: handshake, then frames until it
// ends.
func (t *Transport) serve(ic *inConn) {
	defer t.wg.Done()
	h, conn, status, reason := t.handshake(ic)
	from := h.from
	t.pending.Add(-1)
	if reason != "" {
		if status != statusOK {
			ic.raw.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
			conn.Write([]byte{status})
		}
		t.finish(ic, raft.None)
		if !t.isClosed() {
			t.reject(ic, from, reason)
		}
		return
	}
	t.mu.Lock()
	if len(t.members) > 0 && !t.members[from] {
		// SetPeers removed the sender during the handshake.
		t.mu.Unlock()
		t.finish(ic, raft.None)
		t.reject(ic, from, fmt.Sprintf("node %d is not a member", from))
		return
	}
	if old := t.bySrc[from]; old != nil {
		old.closeWithReason("replaced by a newer connection from the same peer")
	}
	t.bySrc[from] = ic
	t.learnAddrLocked(from, h.addr)
	deliver := t.deliver
	t.mu.Unlock()
	t.stats.accepted.Add(1)
	t.log.Debug("accepted connection", "peer", uint64(from), "remote", ic.remote)

	err := t.readLoop(ic, conn, from, deliver)
	t.finish(ic, from)
	switch {
	case t.isClosed():
	case ic.closedBecause() != "":
		t.log.Info("closed incoming connection", "peer", uint64(from), "remote", ic.remote, "reason", ic.closedBecause())
	case err == nil:
		t.log.Debug("peer closed its connection", "peer", uint64(from), "remote", ic.remote)
	default:
		t.reject(ic, from, err.Error())
	}
}

// finish closes ic and forgets it.
func (t *Transport) finish(ic *inConn, from raft.NodeID) {
	ic.raw.Close()
	t.mu.Lock()
	delete(t.inbound, ic)
	if from != raft.None && t.bySrc[from] == ic {
		delete(t.bySrc, from)
	}
	t.mu.Unlock()
}

// handshake authenticates an accepted connection within HandshakeTimeout.
// On success it returns the sender's hello and the (possibly TLS)
// connection to read from; otherwise a reason, and a status to send back if the peer
// spoke the protocol far enough to deserve one.
func (t *Transport) handshake(ic *inConn) (h hello, conn net.Conn, status byte, reason string) {
	cfg := &t.cfg
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	ic.raw.SetDeadline(deadline)
	conn = ic.raw
	var tc *tls.Conn
	if t.serverTLS != nil {
		tc = tls.Server(ic.raw, t.serverTLS)
		ctx, cancel := context.WithDeadline(t.ctx, deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return hello{}, conn, statusOK, "TLS handshake failed: " + describeReadErr(err, "handshake timeout")
		}
		conn = tc
	}
	h, err := readHello(conn)
	if err != nil {
		return hello{}, conn, statusOK, "bad hello: " + describeReadErr(err, "handshake timeout (peer too slow or silent)")
	}
	switch {
	case h.version != protocolVersion:
		return h, conn, statusBadVersion, fmt.Sprintf("unsupported protocol version %d (want %d)", h.version, protocolVersion)
	case h.cluster != cfg.ClusterID:
		return h, conn, statusWrongCluster, fmt.Sprintf("wrong cluster ID %q", h.cluster)
	case h.to != cfg.ID:
		return h, conn, statusWrongReceiver, fmt.Sprintf("hello addressed to node %d, this is node %d", h.to, cfg.ID)
	case h.from == raft.None || h.from == cfg.ID || !t.isMember(h.from):
		return h, conn, statusNotMember, fmt.Sprintf("node %d is not a member", h.from)
	case h.addr != "" && checkAdvertiseAddr(h.addr) != nil:
		return h, conn, statusBadAddr, "bad advertised address: " + checkAdvertiseAddr(h.addr).Error()
	}
	if tc != nil {
		certs := tc.ConnectionState().PeerCertificates
		name := cfg.PeerName(h.from)
		if len(certs) == 0 {
			return h, conn, statusCertMismatch, "no client certificate"
		}
		if err := certs[0].VerifyHostname(name); err != nil {
			return h, conn, statusCertMismatch, fmt.Sprintf("certificate does not name %q (claimed node %d): %v", name, h.from, err)
		}
	}
	if _, err := conn.Write([]byte{statusOK}); err != nil {
		return h, conn, statusOK, "writing handshake answer: " + err.Error()
	}
	ic.raw.SetDeadline(time.Time{})
	return h, conn, statusOK, ""
}

// describeReadErr names timeouts and early closes plainly.
func describeReadErr(err error, timeout string) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return timeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed mid-handshake"
	}
	return err.Error()
}

// readLoop reads frames from an authenticated connection and delivers
// their messages. It returns nil when the peer closes the connection
// between frames, or the reason it stopped.
func (t *Transport) readLoop(ic *inConn, conn net.Conn, from raft.NodeID, deliver func(raft.Message, bool)) error {
	cfg := &t.cfg
	r := bufio.NewReaderSize(conn, 32<<10)
	var hdr [frameHeaderLen]byte
	var body []byte
	rd := &lazyDeadline{set: ic.raw.SetReadDeadline}
	for {
		if r.Buffered() < frameHeaderLen {
			rd.ensure(time.Now(), cfg.IdleTimeout)
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fmt.Errorf("idle timeout: nothing received for %v", cfg.IdleTimeout)
			case errors.Is(err, io.ErrUnexpectedEOF):
				return errors.New("truncated frame header")
			}
			return err
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		sum := binary.BigEndian.Uint32(hdr[4:])
		if n == 0 {
			if sum != 0 {
				return errors.New("corrupt keepalive frame")
			}
			t.stats.bytesReceived.Add(frameHeaderLen)
			continue
		}
		if n > cfg.MaxFrameSize {
			return fmt.Errorf("frame of %d bytes exceeds MaxFrameSize %d", n, cfg.MaxFrameSize)
		}
		var err error
		if body, err = t.readBody(rd, r, body[:0], n); err != nil {
			return err
		}
		if crc32.Checksum(body, castagnoli) != sum {
			return errors.New("frame checksum mismatch")
		}
		var m raft.Message
		if err := m.UnmarshalBinary(body); err != nil {
			return fmt.Errorf("undecodable message: %v", err)
		}
		if m.From != from || m.To != cfg.ID {
			return fmt.Errorf("message %d->%d on the connection of node %d to node %d", m.From, m.To, from, cfg.ID)
		}
		if cap(body) > 1<<20 {
			body = nil
		}
		t.stats.received.Add(1)
		t.stats.bytesReceived.Add(uint64(frameHeaderLen + n))
		deliver(m, r.Buffered() >= frameHeaderLen)
	}
}

// readBody reads an n-byte frame body into body, growing it only as data
// arrives, with each chunk due within ReadTimeout (a chunk already
// buffered needs no deadline).
func (t *Transport) readBody(rd *lazyDeadline, r *bufio.Reader, body []byte, n int) ([]byte, error) {
	for len(body) < n {
		chunk := min(n-len(body), readChunk)
		body = slices.Grow(body, chunk)
		if r.Buffered() < chunk {
			rd.ensure(time.Now(), t.cfg.ReadTimeout)
		}
		k, err := io.ReadFull(r, body[len(body):len(body)+chunk])
		body = body[:len(body)+k]
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return body, fmt.Errorf("frame stalled: %d of %d bytes after waiting %v for more (slow or hung peer)", len(body), n, t.cfg.ReadTimeout)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				return body, fmt.Errorf("truncated frame: connection closed after %d of %d bytes", len(body), n)
			}
			return body, err
		}
	}
	return body, nil
}
