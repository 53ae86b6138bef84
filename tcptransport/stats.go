package tcptransport

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/raftgo/raft"
)

// Stats are a transport's counters since it was created.
type Stats struct {
	// MessagesSent counts messages written to a peer's connection.
	MessagesSent uint64
	// MessagesDropped counts messages given to Send that were not written:
	// queue full, unknown peer or no address, connection down or failed
	// mid-write, frame too large, or transport closed.
	MessagesDropped uint64
	// MessagesReceived counts messages delivered to the node.
	MessagesReceived uint64
	// BytesSent and BytesReceived count frame bytes (headers included,
	// TLS overhead not) written to and read from peers.
	BytesSent, BytesReceived uint64
	// Reconnects counts connections to a peer established after the first
	// one to it (each means an earlier connection was lost).
	Reconnects uint64
	// DialFailures counts failed attempts to connect to a peer, refused
	// handshakes included.
	DialFailures uint64
	// FramesTooLarge counts outgoing messages dropped for exceeding
	// MaxFrameSize (they are in MessagesDropped too).
	FramesTooLarge uint64
	// ConnectionsAccepted counts incoming connections that passed the
	// handshake; ConnectionsRejected those closed before or after it for a
	// protocol, identity, size or timeout reason (each is logged).
	ConnectionsAccepted, ConnectionsRejected uint64
	// InboundConnections is the number of incoming connections open now,
	// in handshake or authenticated.
	InboundConnections int
	// Peers has one entry per current member other than this node, and,
	// while the configuration is empty, one per node whose advertised
	// address was recorded (see Transport.SetPeers).
	Peers map[raft.NodeID]PeerStats
}

// PeerStats are the counters of the connection to one peer.
type PeerStats struct {
	// Addr is the address this node dials the peer at: from the
	// configuration, or the one the peer advertised in its hello (see
	// AddrLearned).
	Addr string
	// AddrLearned reports that Addr was advertised by the peer rather
	// than given by the configuration (see Transport.SetPeers).
	AddrLearned bool
	// Connected reports whether a connection to the peer has passed its
	// handshake and is in use.
	Connected bool
	// Queued is the number of messages waiting in the peer's queue now.
	Queued int
	// The counters below mean what the Stats fields of the same names
	// mean, for this peer alone.
	MessagesSent    uint64
	MessagesDropped uint64
	BytesSent       uint64
	Reconnects      uint64
	DialFailures    uint64
}

// counters are the transport-wide totals, updated atomically.
type counters struct {
	sent, dropped, received      atomic.Uint64
	bytesSent, bytesReceived     atomic.Uint64
	reconnects, dialFailures     atomic.Uint64
	tooLarge, accepted, rejected atomic.Uint64
}

// peerStat are one peer's counters; they outlive the peer's removal so
// totals stay monotonic.
type peerStat struct {
	sent, dropped, bytesSent, reconnects, dialFailures atomic.Uint64
	// Direct writes made by Send, and those the socket took only part of
	// (not in Stats; the tests read them).
	direct, partial atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() Stats {
	s := Stats{
		MessagesSent:        t.stats.sent.Load(),
		MessagesDropped:     t.stats.dropped.Load(),
		MessagesReceived:    t.stats.received.Load(),
		BytesSent:           t.stats.bytesSent.Load(),
		BytesReceived:       t.stats.bytesReceived.Load(),
		Reconnects:          t.stats.reconnects.Load(),
		DialFailures:        t.stats.dialFailures.Load(),
		FramesTooLarge:      t.stats.tooLarge.Load(),
		ConnectionsAccepted: t.stats.accepted.Load(),
		ConnectionsRejected: t.stats.rejected.Load(),
		Peers:               make(map[raft.NodeID]PeerStats),
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	s.InboundConnections = len(t.inbound)
	for id, p := range t.peers {
		p.mu.Lock()
		ps := PeerStats{Addr: p.addr, AddrLearned: p.learned, Connected: p.up, Queued: len(p.queue)}
		p.mu.Unlock()
		ps.MessagesSent = p.stat.sent.Load()
		ps.MessagesDropped = p.stat.dropped.Load()
		ps.BytesSent = p.stat.bytesSent.Load()
		ps.Reconnects = p.stat.reconnects.Load()
		ps.DialFailures = p.stat.dialFailures.Load()
		s.Peers[id] = ps
	}
	return s
}

// logger wraps the configured slog.Logger.
type logger struct{ *slog.Logger }

func (l logger) enabled(level slog.Level) bool { return l.Enabled(context.Background(), level) }
