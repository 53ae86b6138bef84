package raft

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// LinkFaults describes what a Network does to messages on a link.
type LinkFaults struct {
	// Drop is the probability in [0, 1] that a message is lost.
	Drop float64
	// Duplicate is the probability that a delivered message is delivered
	// twice.
	Duplicate float64
	// Reorder is the probability that a message is held back so that later
	// messages overtake it.
	Reorder float64
	// MinDelay and MaxDelay bound a uniformly random delivery delay.
	MinDelay, MaxDelay time.Duration
}

// NetworkStats counts what a Network did with the messages sent through it.
type NetworkStats struct {
	Sent, Delivered, Dropped, Duplicated uint64
}

type link struct{ from, to NodeID }

// Network is an in-process network connecting nodes by ID, with fault
// injection per link: loss, duplication, reordering, delay, one-way and
// two-way partitions, and disconnected nodes. It is meant for tests,
// examples and benchmarks. All methods are safe for concurrent use.
type Network struct {
	mu           sync.Mutex
	rng          *rand.Rand
	nodes        map[NodeID]*memTransport
	def          LinkFaults
	links        map[link]LinkFaults
	cut          map[link]bool
	disconnected map[NodeID]bool
	timers       map[*time.Timer]struct{}
	stats        NetworkStats  // Delivered is kept in delivered instead
	delivered    atomic.Uint64 // counted without mu: the per-message hot path
}

// NewNetwork returns a fault-free network whose random choices come from
// seed.
func NewNetwork(seed uint64) *Network {
	return &Network{
		rng:          rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes:        make(map[NodeID]*memTransport),
		links:        make(map[link]LinkFaults),
		cut:          make(map[link]bool),
		disconnected: make(map[NodeID]bool),
		timers:       make(map[*time.Timer]struct{}),
	}
}

// Transport returns the Transport of node id on this network. A node
// restarted with the same ID takes over the ID from the closed transport.
func (nw *Network) Transport(id NodeID) Transport {
	return &memTransport{nw: nw, id: id}
}

// SetFaults sets the faults of every link that has no faults of its own.
func (nw *Network) SetFaults(f LinkFaults) {
	nw.mu.Lock()
	nw.def = f
	nw.mu.Unlock()
}

// SetLinkFaults sets the faults of the one-way link from -> to.
func (nw *Network) SetLinkFaults(from, to NodeID, f LinkFaults) {
	nw.mu.Lock()
	nw.links[link{from, to}] = f
	nw.mu.Unlock()
}

// Cut stops all messages from -> to (a one-way partition).
func (nw *Network) Cut(from, to NodeID) {
	nw.mu.Lock()
	nw.cut[link{from, to}] = true
	nw.mu.Unlock()
}

// Partition splits the nodes into groups that cannot reach each other in
// either direction. Nodes not listed keep their links.
func (nw *Network) Partition(groups ...[]NodeID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for i, g := range groups {
		for j, h := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					nw.cut[link{a, b}] = true
				}
			}
		}
	}
}

// Isolate cuts id off from every other node in both directions; unlike
// Disconnect it is undone by Heal.
func (nw *Network) Isolate(id NodeID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for other := range nw.nodes {
		if other != id {
			nw.cut[link{id, other}] = true
			nw.cut[link{other, id}] = true
		}
	}
}

// Heal removes every partition and cut link (faults and disconnections stay).
func (nw *Network) Heal() {
	nw.mu.Lock()
	clear(nw.cut)
	nw.mu.Unlock()
}

// Disconnect drops every message to and from id until Reconnect.
func (nw *Network) Disconnect(id NodeID) {
	nw.mu.Lock()
	nw.disconnected[id] = true
	nw.mu.Unlock()
}

// Reconnect undoes Disconnect.
func (nw *Network) Reconnect(id NodeID) {
	nw.mu.Lock()
	delete(nw.disconnected, id)
	nw.mu.Unlock()
}

// Stats returns the message counters.
func (nw *Network) Stats() NetworkStats {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	s := nw.stats
	s.Delivered = nw.delivered.Load()
	return s
}

// Close cancels every delayed delivery still pending.
func (nw *Network) Close() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for t := range nw.timers {
		t.Stop()
	}
	clear(nw.timers)
}

// route decides the fate of one message: the receiver and the delays of
// its copies (none if dropped).
func (nw *Network) route(m Message, delays []time.Duration) (*memTransport, []time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.stats.Sent++
	dst := nw.nodes[m.To]
	l := link{m.From, m.To}
	if dst == nil || nw.cut[l] || nw.disconnected[m.From] || nw.disconnected[m.To] {
		nw.stats.Dropped++
		return nil, nil
	}
	f, ok := nw.links[l]
	if !ok {
		f = nw.def
	}
	if f.Drop > 0 && nw.rng.Float64() < f.Drop {
		nw.stats.Dropped++
		return nil, nil
	}
	copies := 1
	if f.Duplicate > 0 && nw.rng.Float64() < f.Duplicate {
		copies = 2
		nw.stats.Duplicated++
	}
	for range copies {
		d := f.MinDelay
		if f.MaxDelay > f.MinDelay {
			d += time.Duration(nw.rng.Int64N(int64(f.MaxDelay - f.MinDelay)))
		}
		if f.Reorder > 0 && nw.rng.Float64() < f.Reorder {
			d += time.Millisecond + time.Duration(nw.rng.Int64N(int64(2*time.Millisecond)))
		}
		delays = append(delays, d)
	}
	return dst, delays
}

func (nw *Network) deliverLater(dst *memTransport, m Message, d time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		nw.mu.Lock()
		delete(nw.timers, t)
		nw.mu.Unlock()
		nw.deliverNow(dst, m)
	})
	nw.timers[t] = struct{}{}
}

func (nw *Network) deliverNow(dst *memTransport, m Message) {
	deliver := dst.deliver.Load()
	if deliver == nil {
		nw.mu.Lock()
		nw.stats.Dropped++
		nw.mu.Unlock()
		return
	}
	(*deliver)(m)
	nw.delivered.Add(1)
}

// memTransport is one node's end of a Network.
type memTransport struct {
	nw *Network
	id NodeID

	mu      sync.Mutex                    // serializes Start and Close
	deliver atomic.Pointer[func(Message)] // nil before Start and after Close; read lock-free per message
	started bool
}

var _ Transport = (*memTransport)(nil)

// errTransportReused is returned by Start on a transport already started.
var errTransportReused = errors.New("raft: in-memory transport already started; ask the Network for a new one")

func (t *memTransport) Start(deliver func(Message)) error {
	t.mu.Lock()
	if t.started {
		t.mu.Unlock()
		return errTransportReused
	}
	t.started = true
	t.deliver.Store(&deliver)
	t.mu.Unlock()
	t.nw.mu.Lock()
	t.nw.nodes[t.id] = t
	t.nw.mu.Unlock()
	return nil
}

func (t *memTransport) Send(msgs []Message) {
	if t.deliver.Load() == nil {
		return
	}
	var buf [2]time.Duration
	for _, m := range msgs {
		dst, delays := t.nw.route(m, buf[:0])
		for _, d := range delays {
			if d <= 0 {
				t.nw.deliverNow(dst, m)
			} else {
				t.nw.deliverLater(dst, m, d)
			}
		}
	}
}

func (t *memTransport) SetPeers([]Server) {}

func (t *memTransport) Close() error {
	t.mu.Lock()
	t.deliver.Store(nil)
	t.mu.Unlock()
	t.nw.mu.Lock()
	if t.nw.nodes[t.id] == t {
		delete(t.nw.nodes, t.id)
	}
	t.nw.mu.Unlock()
	return nil
}
