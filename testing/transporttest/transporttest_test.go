package transporttest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// memCluster runs the suite on raft's in-memory Network.
type memCluster struct {
	nw    *raft.Network
	peers []raft.Server
}

func newMemCluster(t *testing.T, ids []raft.NodeID) *memCluster {
	c := &memCluster{nw: raft.NewNetwork(1)}
	for _, id := range ids {
		c.peers = append(c.peers, raft.Server{ID: id})
	}
	t.Cleanup(c.nw.Close)
	return c
}

func (c *memCluster) Peers() []raft.Server                    { return slices.Clone(c.peers) }
func (c *memCluster) Transport(id raft.NodeID) raft.Transport { return c.nw.Transport(id) }
func (c *memCluster) PreservesOrder() bool                    { return true }
func (c *memCluster) Down(id raft.NodeID)                     { c.nw.Disconnect(id) }
func (c *memCluster) Up(id raft.NodeID)                       { c.nw.Reconnect(id) }

func TestNetworkTransportPasses(t *testing.T) {
	Run(t, func(t *testing.T, ids []raft.NodeID) Cluster { return newMemCluster(t, ids) })
}

// readerTransport makes an in-memory transport an InlineDeliverer: it
// delivers from a reader goroutine of its own, with more set while further
// messages wait behind the one delivered. Two bugs can be switched on:
// alwaysMore sets more on every delivery; lockedDeliver holds a lock while
// delivering that Send needs too (Send waits for it until Close).
type readerTransport struct {
	raft.Transport
	alwaysMore    bool
	lockedDeliver bool
	sendMu        sync.Mutex
	inbox         chan raft.Message
	quit, done    chan struct{}
}

func newReaderTransport(tr raft.Transport, alwaysMore, lockedDeliver bool) *readerTransport {
	return &readerTransport{Transport: tr, alwaysMore: alwaysMore, lockedDeliver: lockedDeliver,
		inbox: make(chan raft.Message, 4096), quit: make(chan struct{}), done: make(chan struct{})}
}

func (r *readerTransport) StartInline(deliver func(raft.Message, bool)) error {
	go func() {
		defer close(r.done)
		for {
			select {
			case m := <-r.inbox:
				if r.lockedDeliver {
					r.sendMu.Lock()
				}
				deliver(m, r.alwaysMore || len(r.inbox) > 0)
				if r.lockedDeliver {
					r.sendMu.Unlock()
				}
			case <-r.quit:
				return
			}
		}
	}()
	return r.Transport.Start(func(m raft.Message) {
		select {
		case r.inbox <- m:
		default:
		}
	})
}

func (r *readerTransport) Send(msgs []raft.Message) {
	if r.lockedDeliver {
		for !r.sendMu.TryLock() {
			select {
			case <-r.quit:
				return
			case <-time.After(time.Millisecond):
			}
		}
		defer r.sendMu.Unlock()
	}
	r.Transport.Send(msgs)
}

func (r *readerTransport) Close() error {
	err := r.Transport.Close()
	close(r.quit)
	<-r.done
	return err
}

// readerCluster runs the suite on readerTransports.
type readerCluster struct {
	*memCluster
	alwaysMore, lockedDeliver bool
}

func (c *readerCluster) Transport(id raft.NodeID) raft.Transport {
	return newReaderTransport(c.nw.Transport(id), c.alwaysMore, c.lockedDeliver)
}

func TestInlineTransportPasses(t *testing.T) {
	Run(t, func(t *testing.T, ids []raft.NodeID) Cluster {
		return &readerCluster{memCluster: newMemCluster(t, ids)}
	})
}

func TestSuiteCatchesBrokenInlineTransports(t *testing.T) {
	for _, tt := range []struct {
		name, caseName string
		cluster        func(*memCluster) Cluster
	}{
		{"AlwaysMore", "InlineMoreEndsBatches", func(m *memCluster) Cluster { return &readerCluster{memCluster: m, alwaysMore: true} }},
		{"LockedDeliver", "InlineDeliverMaySend", func(m *memCluster) Cluster { return &readerCluster{memCluster: m, lockedDeliver: true} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := slices.IndexFunc(cases, func(c testCase) bool { return c.name == tt.caseName })
			if i < 0 {
				t.Fatalf("no case %q", tt.caseName)
			}
			factory := func(t *testing.T, ids []raft.NodeID) Cluster { return tt.cluster(newMemCluster(t, ids)) }
			res := runCase(t, cases[i], factory, time.Second)
			if len(res.failures) == 0 {
				t.Fatalf("%s went unnoticed by case %s", tt.name, tt.caseName)
			}
			t.Logf("caught by %s: %s", tt.caseName, res.failures[0])
		})
	}
}

// bug names a deliberate fault in buggyTransport.
type bug int

const (
	dropsEverything bug = iota + 1
	corruptsEntries
	blocksOnDownPeer
	leaksGoroutine
	reordersBatch
	readsSliceLater
	deliversToEveryone
	sendsAfterClose
	closeHangs
)

// buggyCluster wraps the in-memory network with transports that have one
// deliberate bug each, so the tests can check that the suite notices it.
type buggyCluster struct {
	*memCluster
	bug  bug
	leak chan struct{} // closed at test end to free leaked goroutines

	mu       sync.Mutex
	down     map[raft.NodeID]bool
	delivers map[raft.NodeID]func(raft.Message)
}

func (c *buggyCluster) Transport(id raft.NodeID) raft.Transport {
	c.mu.Lock()
	delete(c.down, id)
	c.mu.Unlock()
	return &buggyTransport{Transport: c.nw.Transport(id), c: c, id: id, closed: make(chan struct{})}
}

type buggyTransport struct {
	raft.Transport
	c      *buggyCluster
	id     raft.NodeID
	closed chan struct{}
	stash  []raft.Message
}

func (t *buggyTransport) Start(deliver func(raft.Message)) error {
	t.c.mu.Lock()
	t.c.delivers[t.id] = deliver
	t.c.mu.Unlock()
	if t.c.bug == leaksGoroutine {
		go func() { <-t.c.leak }()
	}
	return t.Transport.Start(deliver)
}

func (t *buggyTransport) Send(msgs []raft.Message) {
	switch t.c.bug {
	case dropsEverything:
		return
	case corruptsEntries:
		out := make([]raft.Message, len(msgs))
		for i, m := range msgs {
			if len(m.Entries) > 0 {
				m.Entries = slices.Clone(m.Entries)
				m.Entries[0].Term++
			}
			out[i] = m
		}
		msgs = out
	case blocksOnDownPeer:
		t.c.mu.Lock()
		blocked := false
		for _, m := range msgs {
			blocked = blocked || t.c.down[m.To]
		}
		t.c.mu.Unlock()
		if blocked {
			<-t.closed
			return
		}
	case reordersBatch:
		msgs = slices.Clone(msgs)
		slices.Reverse(msgs)
	case readsSliceLater:
		prev := t.stash
		t.stash = msgs
		msgs = prev
	case deliversToEveryone:
		t.c.mu.Lock()
		all := make([]func(raft.Message), 0, len(t.c.delivers))
		for id, d := range t.c.delivers {
			if id != t.id {
				all = append(all, d)
			}
		}
		t.c.mu.Unlock()
		for _, m := range msgs {
			for _, d := range all {
				d(m)
			}
		}
		return
	}
	t.Transport.Send(msgs)
}

func (t *buggyTransport) Close() error {
	t.c.mu.Lock()
	t.c.down[t.id] = true
	t.c.mu.Unlock()
	select {
	case <-t.closed:
	default:
		close(t.closed)
	}
	switch t.c.bug {
	case sendsAfterClose:
		return nil
	case closeHangs:
		<-t.c.leak
	}
	return t.Transport.Close()
}

func TestSuiteCatchesBrokenTransports(t *testing.T) {
	tests := []struct {
		bug     bug
		bugName string
		name    string // the case that must fail
	}{
		{dropsEverything, "DropsEverything", "DeliversIntact"},
		{corruptsEntries, "CorruptsEntries", "DeliversIntact"},
		{blocksOnDownPeer, "BlocksOnDownPeer", "PeerDownDoesNotBlock"},
		{leaksGoroutine, "LeaksGoroutine", "StartAndClose"},
		{reordersBatch, "ReordersBatch", "OrderedPerPeer"},
		{readsSliceLater, "ReadsSliceLater", "SendCopiesMessages"},
		{deliversToEveryone, "DeliversToEveryone", "AllPairs"},
		{sendsAfterClose, "SendsAfterClose", "ClosedTransportIsSilent"},
		{closeHangs, "CloseHangs", "StartAndClose"},
	}
	for _, tt := range tests {
		t.Run(tt.bugName, func(t *testing.T) {
			i := slices.IndexFunc(cases, func(c testCase) bool { return c.name == tt.name })
			if i < 0 {
				t.Fatalf("no case %q", tt.name)
			}
			leak := make(chan struct{})
			t.Cleanup(func() { close(leak) })
			factory := func(t *testing.T, ids []raft.NodeID) Cluster {
				return &buggyCluster{memCluster: newMemCluster(t, ids), bug: tt.bug, leak: leak,
					down: map[raft.NodeID]bool{}, delivers: map[raft.NodeID]func(raft.Message){}}
			}
			res := runCase(t, cases[i], factory, time.Second)
			if len(res.failures) == 0 {
				t.Fatalf("%s went unnoticed by case %s", tt.bugName, tt.name)
			}
			t.Logf("caught by %s: %s", tt.name, res.failures[0])
		})
	}
}
