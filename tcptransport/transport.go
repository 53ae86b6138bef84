// Package tcptransport is a raft.Transport over TCP, with optional mutual
// TLS, using only the standard library.
//
// Each node keeps one long-lived outgoing connection per peer, fed by a
// bounded per-peer queue and its own goroutine, so a slow peer or a large
// snapshot to one peer never delays heartbeats to the others, and Send never
// waits for the network. Queued messages are batched into one write. Lost
// connections are re-established with exponential backoff and jitter.
// Incoming connections start with a handshake naming the cluster and the
// sending node; with TLS configured, the sender's certificate must be signed
// by the cluster CA and name the node it claims to be.
//
// Usage:
//
//	tr, err := tcptransport.Listen("10.0.0.1:7001", tcptransport.Config{ID: 1, ClusterID: "orders"})
//	if err != nil { ... }
//	node, err := raft.NewNode(cfg, sm, storage, tr) // cfg.Peers carry each node's Addr
//
// Peer addresses come from raft.Server.Addr in the configuration the node
// passes to SetPeers. A node started with an empty configuration, to be
// added to a running cluster, needs no address: every dialer advertises
// its own (Config.AdvertiseAddr) in its hello, and until the configuration
// reaches the new node through the log it answers each sender at the
// address that sender advertised. See docs/transport.md for the wire
// format, joining, TLS set-up and tuning.
package tcptransport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/raftgo/raft"
)

// ErrClosed is returned by Start on a closed transport.
var ErrClosed = errors.New("tcptransport: transport is closed")

// Transport is a raft.Transport over TCP. Create it with Listen or New; it
// is owned by one raft.Node, which calls SetPeers, Start, Send and Close.
// All methods are safe for concurrent use.
type Transport struct {
	cfg       Config
	ln        net.Listener
	serverTLS *tls.Config
	log       logger

	ctx    context.Context // cancelled by Close; aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the transport started

	mu      sync.RWMutex
	started bool
	closed  bool
	deliver func(raft.Message, bool)
	peers   map[raft.NodeID]*peer     // outgoing, one per member other than ID
	members map[raft.NodeID]bool      // from the last SetPeers, self included
	inbound map[*inConn]struct{}      // accepted connections, handshake or not
	bySrc   map[raft.NodeID]*inConn   // the authenticated connection per sender
	pending atomic.Int64              // accepted connections in handshake
	closeMu sync.Mutex                // serializes Close
	stats   counters                  // transport-wide totals
	removed map[raft.NodeID]*peerStat // counters of peers no longer members
}

var _ raft.Transport = (*Transport)(nil)
var _ raft.InlineDeliverer = (*Transport)(nil)

// Listen creates a transport for cfg.ID accepting peers on the TCP address
// addr ("host:port"; port 0 picks a free port, see Addr).
func Listen(addr string, cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return newTransport(ln, cfg), nil
}

// New creates a transport for cfg.ID accepting peers on ln, which it owns
// from now on (Close closes it). It lets callers bring their own listener,
// for example one inherited from a supervisor.
func New(ln net.Listener, cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return newTransport(ln, cfg), nil
}

func newTransport(ln net.Listener, cfg Config) *Transport {
	t := &Transport{
		cfg:     cfg,
		ln:      ln,
		log:     logger{cfg.Logger.With("node", uint64(cfg.ID))},
		peers:   make(map[raft.NodeID]*peer),
		members: make(map[raft.NodeID]bool),
		inbound: make(map[*inConn]struct{}),
		bySrc:   make(map[raft.NodeID]*inConn),
		removed: make(map[raft.NodeID]*peerStat),
	}
	if cfg.TLS != nil {
		t.serverTLS = cfg.serverTLS()
	}
	if t.cfg.AdvertiseAddr == "" && ln != nil {
		t.cfg.AdvertiseAddr = defaultAdvertiseAddr(ln.Addr())
		if t.cfg.AdvertiseAddr == "" {
			t.log.Info("no address to advertise: the listener's address cannot be dialed by peers; set Config.AdvertiseAddr so that joining nodes can answer this one",
				"listen", ln.Addr().String())
		}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Addr returns the address the transport listens on.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// Start begins accepting peers and delivering their messages to deliver.
// It returns an error if called twice or after Close.
func (t *Transport) Start(deliver func(raft.Message)) error {
	if deliver == nil {
		return errors.New("tcptransport: Start needs a deliver function")
	}
	return t.start(func(m raft.Message, _ bool) { deliver(m) })
}

// StartInline is Start for a node that handles messages on the goroutine
// that delivers them (see raft.InlineDeliverer). Each connection has its
// own reader goroutine, which holds no lock while it delivers; more is set
// when the next frame has already been read.
func (t *Transport) StartInline(deliver func(m raft.Message, more bool)) error {
	if deliver == nil {
		return errors.New("tcptransport: StartInline needs a deliver function")
	}
	return t.start(deliver)
}

func (t *Transport) start(deliver func(raft.Message, bool)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.started {
		return errors.New("tcptransport: Start called twice")
	}
	t.started, t.deliver = true, deliver
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
}

// Send queues each message for its peer and returns without waiting for
// the network: small batches to an idle connection are written at once
// with a non-blocking system call, everything else by the peer's own
// goroutine. A message is dropped and counted when its peer is unknown or
// has no address, when the peer's queue is full, or when the transport is
// closed.
func (t *Transport) Send(msgs []raft.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var touched [8]*peer
	n := 0
	for i := range msgs {
		m := &msgs[i]
		p := t.peers[m.To]
		if t.closed || p == nil {
			t.stats.dropped.Add(1)
			continue
		}
		p.enqueue(*m)
		switch {
		case slices.Contains(touched[:n], p):
		case n < len(touched):
			touched[n] = p
			n++
		default:
			p.flush()
		}
	}
	for _, p := range touched[:n] {
		p.flush()
	}
}

// SetPeers sets the cluster members and their addresses. Peers that left
// are disconnected (their queued messages dropped), new ones are connected
// on first use, and a changed address takes effect on the next connection.
// While the member list is empty (a node waiting to be added to a
// cluster), any sender with the right cluster ID (and certificate) is
// accepted, and the address it advertises in its hello is recorded so that
// this node can answer it; otherwise only members are accepted. An address
// given here always wins over an advertised one; a member given here with
// an empty address keeps the address it advertised.
func (t *Transport) SetPeers(servers []raft.Server) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	members := make(map[raft.NodeID]bool, len(servers))
	for _, s := range servers {
		members[s.ID] = true
		if s.ID == t.cfg.ID {
			continue
		}
		if p := t.peers[s.ID]; p != nil {
			p.configure(s.Addr)
			continue
		}
		t.addPeerLocked(s.ID, s.Addr, false)
	}
	for id, p := range t.peers {
		// With no configuration yet, peers learned from hellos stay:
		// they are how this node answers the cluster that contacts it.
		if !members[id] && (len(members) > 0 || !p.isLearned()) {
			p.stop()
			t.removed[id] = p.stat
			delete(t.peers, id)
		}
	}
	t.members = members
	if len(members) > 0 {
		for src, c := range t.bySrc {
			if !members[src] {
				c.closeWithReason("sender is no longer a member")
			}
		}
	}
}

// addPeerLocked creates the outgoing side for node id and starts its
// goroutine. t.mu must be held for writing and t not closed.
func (t *Transport) addPeerLocked(id raft.NodeID, addr string, learned bool) {
	p := newPeer(t, id, addr, t.removed[id])
	p.learned = learned
	delete(t.removed, id)
	t.peers[id] = p
	t.wg.Add(1)
	go p.run()
}

// maxLearnedPeers bounds the peers created from hellos while the
// configuration is empty. A node waiting to be added hears from its
// cluster's leader (and from the next leader if leadership changes before
// the configuration reaches it), so the bound is never reached in
// practice; it stops a peer that knows the cluster ID (without TLS) from
// making this node start a goroutine per node ID it claims.
const maxLearnedPeers = 16

// learnAddrLocked records addr, advertised in the hello of an
// authenticated connection from node from, as the address at which to
// reach from, if the configuration does not give one: always while the
// configuration is empty (creating the peer), and for a member whose
// configured address is empty. t.mu must be held for writing.
func (t *Transport) learnAddrLocked(from raft.NodeID, addr string) {
	if addr == "" || t.closed {
		return
	}
	if p := t.peers[from]; p != nil {
		if p.learn(addr) {
			t.log.Debug("using the address the peer advertised", "peer", uint64(from), "addr", addr)
		}
		return
	}
	if len(t.members) > 0 {
		return // a member without a peer is this node itself
	}
	if len(t.peers) >= maxLearnedPeers {
		t.log.Warn("not recording an advertised address: too many peers learned before the configuration arrived",
			"peer", uint64(from), "addr", addr, "max", maxLearnedPeers)
		return
	}
	t.addPeerLocked(from, addr, true)
	t.log.Info("answering a peer at the address it advertised (no configuration yet)", "peer", uint64(from), "addr", addr)
}

// isMember reports whether an incoming connection from id may be accepted.
func (t *Transport) isMember(id raft.NodeID) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.members) == 0 || t.members[id]
}

// Close stops the transport: it closes the listener and every connection,
// drops queued messages and waits for its goroutines to exit. deliver is
// not called after Close returns. Close is idempotent.
func (t *Transport) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.cancel()
	err := t.ln.Close()
	for _, p := range t.peers {
		p.stop()
	}
	for c := range t.inbound {
		c.close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// isClosed reports whether Close has begun.
func (t *Transport) isClosed() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.closed
}
