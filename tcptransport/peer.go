package tcptransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raftgo/raft"
)

// writeChunk is the most bytes handed to one conn.Write, so the write
// deadline measures progress, not the size of a large batch.
const writeChunk = 1 << 20

// directMax is the most queued bytes Send writes to a peer's socket itself
// (see peer.direct); more are left to the peer's goroutine.
const directMax = 16 << 10

// peer is the outgoing side of the connection to one member: a bounded
// queue filled by Send and drained by the peer's own goroutine, which owns
// the connection.
type peer struct {
	t      *Transport
	id     raft.NodeID
	stat   *peerStat
	ctx    context.Context // cancelled by stop; aborts a dial in progress
	cancel context.CancelFunc
	notify chan struct{} // 1-buffered: the queue may have grown

	// Used by run's goroutine only: the write deadline of wconn.
	wconn net.Conn
	wd    lazyDeadline

	// wmu is held by whoever writes to the connection: run's goroutine,
	// or Send writing directly (see direct). The fields below are guarded
	// by it.
	wmu    sync.Mutex
	dbatch []raft.Message
	dbuf   []byte
	rest   []byte // the part of a direct write the socket did not take
	restN  int    // messages whose last bytes are in rest
	broken error  // a direct write failed: run must drop the connection
	sock   socketWriter

	lastWrite atomic.Int64 // unix nanoseconds of the last write to the connection

	mu         sync.Mutex
	addr       string
	learned    bool // addr came from the peer's hello, not the configuration
	queue      []raft.Message
	queueBytes int
	conn       net.Conn        // the raw connection being set up or in use, nil if none
	up         bool            // conn passed its handshake
	raw        syscall.RawConn // conn's socket while up and not TLS, for direct writes
	stopped    bool
}

func newPeer(t *Transport, id raft.NodeID, addr string, stat *peerStat) *peer {
	if stat == nil {
		stat = new(peerStat)
	}
	p := &peer{t: t, id: id, addr: addr, stat: stat, notify: make(chan struct{}, 1)}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

// approxSize estimates the encoded size of m for the queue's byte bound.
func approxSize(m *raft.Message) int {
	n := frameHeaderLen + 64 + len(m.SnapshotData) + 24*len(m.Snapshot.Config.Servers)
	for i := range m.Entries {
		n += 24 + len(m.Entries[i].Data)
	}
	return n
}

// enqueue adds m to the queue, or drops it if the queue is full or the
// peer stopped. It never blocks on the network. The caller must then call
// flush.
func (p *peer) enqueue(m raft.Message) {
	size := approxSize(&m)
	cfg := &p.t.cfg
	p.mu.Lock()
	if p.stopped || len(p.queue) >= cfg.QueueSize || (len(p.queue) > 0 && p.queueBytes+size > cfg.QueueBytes) {
		p.mu.Unlock()
		p.drop(1)
		return
	}
	p.queue = append(p.queue, m)
	p.queueBytes += size
	p.mu.Unlock()
}

// flush gets what enqueue queued on its way: written at once by direct,
// or left to the peer's goroutine, which it wakes.
func (p *peer) flush() {
	if !p.direct() {
		p.wake()
	}
}

// direct writes the queued messages to the socket from the caller's
// goroutine when that is sure not to block: the connection is up (plain
// TCP), nobody else is writing, and the queue is small. The write is a
// single non-blocking system call; what the socket buffer does not take is
// left for the peer's goroutine. A small message thus reaches the wire
// without waking another goroutine, which on a loaded machine is a good
// part of a round trip. It reports whether nothing is left to do for the
// peer's goroutine.
func (p *peer) direct() bool {
	if !p.wmu.TryLock() {
		return false // run's goroutine is writing and will take the queue
	}
	defer p.wmu.Unlock()
	if p.rest != nil || p.broken != nil {
		return false
	}
	p.mu.Lock()
	raw := p.raw
	if raw == nil || p.queueBytes > directMax {
		p.mu.Unlock()
		return false
	}
	p.dbatch = append(p.dbatch[:0], p.queue...)
	clear(p.queue)
	p.queue, p.queueBytes = p.queue[:0], 0
	p.mu.Unlock()
	if len(p.dbatch) == 0 {
		return true
	}
	var n int
	p.dbuf, n = p.encode(p.dbuf[:0], p.dbatch)
	clear(p.dbatch)
	if n == 0 {
		return true
	}
	k, err := p.sock.write(raw, p.dbuf)
	p.stat.direct.Add(1)
	p.stat.bytesSent.Add(uint64(k))
	p.t.stats.bytesSent.Add(uint64(k))
	p.lastWrite.Store(time.Now().UnixNano())
	switch {
	case err != nil:
		p.broken = err
		p.drop(n)
		return false
	case k < len(p.dbuf):
		p.stat.partial.Add(1)
		p.rest, p.restN = p.dbuf[k:], n
		p.dbuf = nil
		return false
	}
	p.sent(n)
	return true
}

func (p *peer) sent(n int) {
	p.stat.sent.Add(uint64(n))
	p.t.stats.sent.Add(uint64(n))
}

// take moves the queued messages into buf and empties the queue.
func (p *peer) take(buf []raft.Message) []raft.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf = append(buf, p.queue...)
	clear(p.queue)
	p.queue, p.queueBytes = p.queue[:0], 0
	return buf
}

func (p *peer) drop(n int) {
	p.stat.dropped.Add(uint64(n))
	p.t.stats.dropped.Add(uint64(n))
}

func (p *peer) getAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// setAddrLocked changes the peer's address; a connection to the old address is
// closed so the next message goes to the new one. p.mu must be held.
func (p *peer) setAddrLocked(addr string) {
	if addr == p.addr {
		return
	}
	p.addr = addr
	if p.conn != nil {
		p.conn.Close()
	}
}

// configure sets the address the configuration gives the peer. An empty
// one keeps an address learned from the peer's hello; any other replaces
// it, and later hellos no longer change it.
func (p *peer) configure(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if addr == "" && p.learned {
		return
	}
	p.setAddrLocked(addr)
	p.learned = false
}

// learn records addr, advertised by the peer in its hello, unless the
// configuration gave the peer an address. It reports whether it did.
func (p *peer) learn(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.learned && p.addr != "" {
		return false
	}
	p.setAddrLocked(addr)
	p.learned = true
	return true
}

func (p *peer) isLearned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.learned
}

// stop makes the peer's goroutine exit, closing its connection and
// dropping what is queued.
func (p *peer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	p.cancel()
	if p.conn != nil {
		p.conn.Close()
	}
}

// setConn records the connection being set up, so stop and an address
// change can interrupt it, and, once up, the socket for direct writes (nil
// if they are not possible). It returns false if the peer stopped
// meanwhile.
func (p *peer) setConn(c net.Conn, up bool, raw syscall.RawConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped && c != nil {
		return false
	}
	p.conn, p.up = c, up && c != nil
	p.raw = nil
	if p.up {
		p.raw = raw
	}
	return true
}

// run is the peer's goroutine: it waits for queued messages, connects when
// needed and writes them in batches.
func (p *peer) run() {
	defer p.t.wg.Done()
	var (
		conn     net.Conn // nil while disconnected
		buf      []byte
		batch    []raft.Message
		failures int
		dialed   bool // a connection was established before
	)
	// The keepalive timer is not reset on every write (that is a timer
	// update per batch); when it fires it checks how long the connection
	// has really been silent.
	keepEvery := p.t.cfg.IdleTimeout / 3
	keepalive := time.NewTimer(keepEvery)
	// disconnect drops the connection and any partly written direct
	// write with it; p.wmu must be held.
	disconnect := func(err error) {
		conn.Close()
		conn = nil
		p.dropRest()
		p.broken = nil
		p.setConn(nil, false, nil)
		if err != nil && p.ctx.Err() == nil {
			p.t.log.Warn("connection to peer lost", "peer", uint64(p.id), "err", err)
		}
	}
	defer func() {
		keepalive.Stop()
		p.wmu.Lock()
		if conn != nil {
			disconnect(nil)
		}
		p.setConn(nil, false, nil)
		p.wmu.Unlock()
		p.drop(len(p.take(batch[:0])))
	}()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.notify:
		case <-keepalive.C:
			if silent := time.Duration(time.Now().UnixNano() - p.lastWrite.Load()); silent < keepEvery {
				keepalive.Reset(keepEvery - silent)
				continue
			}
			if conn != nil {
				var ping [frameHeaderLen]byte
				p.wmu.Lock()
				err := p.broken
				if err == nil {
					err = p.writeRest(conn)
				}
				if err == nil {
					err = p.write(conn, ping[:])
				}
				if err != nil {
					disconnect(err)
				}
				p.wmu.Unlock()
				p.lastWrite.Store(time.Now().UnixNano())
			}
			keepalive.Reset(keepEvery)
			continue
		}
		if conn == nil {
			if !p.hasQueued() {
				continue
			}
			c, err := p.connect()
			if err != nil {
				p.drop(len(p.take(batch[:0])))
				clear(batch)
				p.stat.dialFailures.Add(1)
				p.t.stats.dialFailures.Add(1)
				failures++
				if p.ctx.Err() != nil {
					return
				}
				if failures == 1 {
					p.t.log.Warn("cannot connect to peer; retrying with backoff", "peer", uint64(p.id), "addr", p.getAddr(), "err", err)
				} else {
					p.t.log.Debug("cannot connect to peer", "peer", uint64(p.id), "addr", p.getAddr(), "failures", failures, "err", err)
				}
				if !p.sleep(p.backoff(failures)) {
					return
				}
				continue
			}
			conn = c
			failures = 0
			if dialed {
				p.stat.reconnects.Add(1)
				p.t.stats.reconnects.Add(1)
			}
			dialed = true
			p.t.log.Info("connected to peer", "peer", uint64(p.id), "addr", p.getAddr())
		}
		// Holding wmu while taking the queue keeps the order: a direct
		// write cannot overtake messages taken here.
		p.wmu.Lock()
		err := p.broken
		if err == nil {
			err = p.writeRest(conn)
		}
		if err == nil {
			batch = p.take(batch[:0])
			buf, err = p.writeBatch(conn, batch, buf)
			clear(batch)
			if cap(buf) > 4*p.t.cfg.MaxBatchBytes {
				buf = nil // do not keep a huge snapshot's buffer around
			}
		}
		if err != nil {
			disconnect(err)
		}
		p.wmu.Unlock()
		p.lastWrite.Store(time.Now().UnixNano())
		if conn == nil && p.hasQueued() {
			p.wake() // reconnect for what was queued meanwhile
		}
	}
}

// wake tells the peer's goroutine the queue may have grown.
func (p *peer) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *peer) hasQueued() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) > 0
}

// writeRest writes what the socket did not take of a direct write; p.wmu
// must be held.
func (p *peer) writeRest(conn net.Conn) error {
	if p.rest == nil {
		return nil
	}
	err := p.write(conn, p.rest)
	if err == nil {
		p.sent(p.restN)
	} else {
		p.drop(p.restN)
	}
	p.dbuf, p.rest, p.restN = p.rest[:0], nil, 0
	return err
}

// dropRest forgets a partly written direct write (its connection is gone);
// p.wmu must be held.
func (p *peer) dropRest() {
	if p.rest != nil {
		p.drop(p.restN)
		p.rest, p.restN = nil, 0
	}
}

// backoff returns the wait after the given number of consecutive failures:
// exponential from MinBackoff, capped at MaxBackoff, drawn from [d/2, d).
func (p *peer) backoff(failures int) time.Duration {
	d := p.t.cfg.MinBackoff
	for i := 1; i < failures && d < p.t.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.t.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until the peer stops; it returns false if stopped.
func (p *peer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// errRefused wraps a handshake the listener refused.
var errRefused = errors.New("peer refused the handshake")

// connect dials the peer, runs the TLS handshake if configured and the
// hello exchange, all within DialTimeout.
func (p *peer) connect() (net.Conn, error) {
	cfg := &p.t.cfg
	addr := p.getAddr()
	if addr == "" {
		return nil, errors.New("peer has no address: none in the configuration, none advertised")
	}
	ctx, cancel := context.WithTimeout(p.ctx, cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if !p.setConn(raw, false, nil) {
		raw.Close()
		return nil, context.Canceled
	}
	fail := func(err error) (net.Conn, error) {
		raw.Close()
		p.setConn(nil, false, nil)
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	conn := raw
	if cfg.TLS != nil {
		tc := tls.Client(raw, cfg.clientTLS(p.id))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("TLS handshake: %w", err))
		}
		conn = tc
	}
	h := appendHello(nil, hello{version: protocolVersion, from: cfg.ID, to: p.id, cluster: cfg.ClusterID, addr: cfg.AdvertiseAddr})
	if _, err := conn.Write(h); err != nil {
		return fail(fmt.Errorf("sending hello: %w", err))
	}
	var status [1]byte
	if _, err := io.ReadFull(conn, status[:]); err != nil {
		return fail(fmt.Errorf("reading handshake answer: %w", err))
	}
	if status[0] != statusOK {
		return fail(fmt.Errorf("%w: %s", errRefused, statusText(status[0])))
	}
	raw.SetDeadline(time.Time{})
	var sock syscall.RawConn
	if cfg.TLS == nil {
		sock = rawSocket(raw)
	}
	if !p.setConn(raw, true, sock) {
		return fail(context.Canceled)
	}
	return conn, nil
}

// writeBatch encodes batch into frames and writes them, up to MaxBatchBytes
// per write. On a write error the unwritten messages are dropped.
func (p *peer) writeBatch(conn net.Conn, batch []raft.Message, buf []byte) ([]byte, error) {
	inBuf := 0
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := p.write(conn, buf)
		if err != nil {
			p.drop(inBuf)
		} else {
			p.sent(inBuf)
		}
		buf, inBuf = buf[:0], 0
		return err
	}
	for i := range batch {
		var ok bool
		if buf, ok = p.appendMsg(buf, &batch[i]); !ok {
			continue
		}
		inBuf++
		if len(buf) >= p.t.cfg.MaxBatchBytes {
			if err := flush(); err != nil {
				p.drop(len(batch) - i - 1)
				return buf, err
			}
		}
	}
	return buf, flush()
}

// encode appends the frames of batch to buf and returns how many messages
// it encoded.
func (p *peer) encode(buf []byte, batch []raft.Message) ([]byte, int) {
	n := 0
	for i := range batch {
		var ok bool
		if buf, ok = p.appendMsg(buf, &batch[i]); ok {
			n++
		}
	}
	return buf, n
}

// appendMsg appends m's frame to buf. A message too large for a frame is
// dropped and logged, and appendMsg reports false.
func (p *peer) appendMsg(buf []byte, m *raft.Message) ([]byte, bool) {
	buf, err := appendFrame(buf, m, p.t.cfg.MaxFrameSize)
	if err != nil {
		p.drop(1)
		var tl *FrameTooLargeError
		if errors.As(err, &tl) {
			p.t.stats.tooLarge.Add(1)
		}
		p.t.log.Error("dropping message", "peer", uint64(p.id), "err", err)
		return buf, false
	}
	return buf, true
}

// write writes b in chunks, each of which must make progress within
// WriteTimeout.
func (p *peer) write(conn net.Conn, b []byte) error {
	if p.wconn != conn {
		p.wconn, p.wd = conn, lazyDeadline{set: conn.SetWriteDeadline}
	}
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		p.wd.ensure(time.Now(), p.t.cfg.WriteTimeout)
		k, err := conn.Write(b[:n])
		p.stat.bytesSent.Add(uint64(k))
		p.t.stats.bytesSent.Add(uint64(k))
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
