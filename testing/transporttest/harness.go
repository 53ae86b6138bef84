package transporttest

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/raftgo/raft"
)

// resendEvery is how long the suite waits before resending messages that
// have not arrived; transports are best-effort, so the suite retries the
// way Raft does.
const resendEvery = 200 * time.Millisecond

// msgKey identifies a test message: its sender and sequence number (the
// Index field).
type msgKey struct {
	from raft.NodeID
	seq  uint64
}

// node is one member under test and what its transports delivered.
type node struct {
	c  *checker
	id raft.NodeID

	mu        sync.Mutex
	tr        raft.Transport       // current transport; nil while closed
	gen       int                  // generation of tr, bumped on every start
	closedGen int                  // highest generation whose Close returned
	got       []raft.Message       // every delivery, in order
	seen      map[msgKey]int       // deliveries per message
	late      []string             // deliveries by a transport after its Close returned
	misaddr   []string             // deliveries of messages addressed elsewhere
	corrupt   []string             // deliveries that differ from what was sent
	signal    chan struct{}        // 1-buffered, poked on every delivery
	inline    bool                 // the transport is a raft.InlineDeliverer, started with StartInline
	lastMore  map[raft.NodeID]bool // per sender, the more flag of its latest delivery (inline only)
	echo      bool                 // answer echoSeq messages from inside deliver (inline only)
}

// Messages in [echoSeq, echoSeq+echoSpan) are answered, when a node's echo
// is set, from inside its deliver callback with seq+echoSpan, after a
// SetPeers call: what a node does on a transport's reader goroutine.
const (
	echoSeq  = 8000
	echoSpan = 1000
)

// start builds and starts a new transport for every node of the case.
func (c *checker) startAll() {
	for _, id := range c.ids {
		c.start(id)
	}
}

// start builds, configures and starts a new transport for node id.
func (c *checker) start(id raft.NodeID) {
	n := c.nodes[id]
	if n == nil {
		n = &node{c: c, id: id, seen: make(map[msgKey]int), signal: make(chan struct{}, 1), lastMore: make(map[raft.NodeID]bool)}
		c.nodes[id] = n
	}
	tr := c.cluster.Transport(id)
	if tr == nil {
		c.fatalf("Cluster.Transport(%d) returned nil", id)
	}
	tr.SetPeers(c.cluster.Peers())
	n.mu.Lock()
	n.gen++
	gen := n.gen
	n.mu.Unlock()
	// A node starts an InlineDeliverer with StartInline, so that is what
	// the suite checks.
	deliver := n.deliverFunc(gen)
	var err error
	if it, ok := tr.(raft.InlineDeliverer); ok {
		n.mu.Lock()
		n.inline = true
		n.mu.Unlock()
		err = it.StartInline(func(m raft.Message, more bool) {
			n.mu.Lock()
			n.lastMore[m.From] = more
			echo := n.echo && m.Index >= echoSeq && m.Index < echoSeq+echoSpan
			n.mu.Unlock()
			deliver(m)
			if echo {
				tr.SetPeers(c.cluster.Peers())
				tr.Send([]raft.Message{testMessage(n.id, m.From, m.Index+echoSpan)})
			}
		})
	} else {
		err = tr.Start(deliver)
	}
	if err != nil {
		c.fatalf("node %d: Start: %v", id, err)
	}
	n.mu.Lock()
	n.tr = tr
	n.mu.Unlock()
}

// deliverFunc is the deliver callback given to generation gen of the
// node's transport.
func (n *node) deliverFunc(gen int) func(raft.Message) {
	return func(m raft.Message) {
		var problem string
		if m.Index < bigSeq || m.Index >= bigSeq+16 { // big ones are checked by the case
			if want := testMessage(m.From, m.To, m.Index); !equalMessages(m, want) {
				problem = fmt.Sprintf("message %d->%d seq %d arrived altered:\n\tgot  %v\n\twant %v", m.From, m.To, m.Index, m, want)
			}
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if gen <= n.closedGen {
			n.late = append(n.late, fmt.Sprintf("transport generation %d of node %d delivered %v after its Close returned", gen, n.id, m))
		}
		if m.To != n.id {
			n.misaddr = append(n.misaddr, fmt.Sprintf("node %d was handed %v", n.id, m))
		}
		if problem != "" {
			n.corrupt = append(n.corrupt, problem)
		}
		n.got = append(n.got, m)
		n.seen[msgKey{m.From, m.Index}]++
		select {
		case n.signal <- struct{}{}:
		default:
		}
	}
}

// transport returns the node's current transport, or nil if closed.
func (n *node) transport() raft.Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tr
}

// close closes the node's transport and waits up to c.wait for Close to
// return.
func (c *checker) close(id raft.NodeID) {
	n := c.nodes[id]
	n.mu.Lock()
	tr, gen := n.tr, n.gen
	n.tr = nil
	n.mu.Unlock()
	if tr == nil {
		return
	}
	if !c.within(c.wait, func() {
		if err := tr.Close(); err != nil {
			c.errorf("node %d: Close: %v", id, err)
		}
	}) {
		c.fatalf("node %d: Close did not return within %v", id, c.wait)
	}
	n.mu.Lock()
	n.closedGen = gen
	n.mu.Unlock()
}

// closeAll closes every open transport, reporting (not stopping at) a
// Close that hangs.
func (c *checker) closeAll() {
	for _, id := range c.ids {
		func() {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(errFatal); !ok {
						c.errorf("node %d: Close panicked: %v", id, r)
					}
				}
			}()
			if c.nodes[id] != nil {
				c.close(id)
			}
		}()
	}
	for _, id := range c.ids {
		if n := c.nodes[id]; n != nil {
			n.mu.Lock()
			for _, s := range n.misaddr {
				c.errorf("%s", s)
			}
			for _, s := range n.corrupt {
				c.errorf("%s", s)
			}
			n.mu.Unlock()
		}
	}
}

// within runs f on another goroutine and reports whether it returned
// within d. Panics in f become failures.
func (c *checker) within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				c.errorf("panic: %v", r)
			}
		}()
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// send hands msgs to node from's transport.
func (c *checker) send(from raft.NodeID, msgs []raft.Message) {
	tr := c.nodes[from].transport()
	if tr == nil {
		c.fatalf("internal: node %d is closed", from)
	}
	tr.Send(msgs)
}

// delivered reports how many times node to received (from, seq).
func (c *checker) delivered(to, from raft.NodeID, seq uint64) int {
	n := c.nodes[to]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seen[msgKey{from, seq}]
}

// deliverAll sends the messages seqs from -> to, resending the missing
// ones every resendEvery, until each has arrived at least once. It fails
// the case if that takes longer than c.wait.
func (c *checker) deliverAll(from, to raft.NodeID, seqs []uint64, what string) {
	c.deliverAllMsgs(from, to, seqs, func(seq uint64) raft.Message { return testMessage(from, to, seq) }, what)
}

func (c *checker) deliverAllMsgs(from, to raft.NodeID, seqs []uint64, build func(uint64) raft.Message, what string) {
	deadline := time.Now().Add(c.wait)
	pending := slices.Clone(seqs)
	for {
		msgs := make([]raft.Message, 0, len(pending))
		for _, s := range pending {
			msgs = append(msgs, build(s))
		}
		c.send(from, msgs)
		resend := time.Now().Add(resendEvery)
		for {
			pending = slices.DeleteFunc(pending, func(s uint64) bool { return c.delivered(to, from, s) > 0 })
			if len(pending) == 0 {
				return
			}
			if time.Now().After(deadline) {
				c.fatalf("%s: %d of %d messages %d->%d not delivered within %v despite resending (first missing seq %d)",
					what, len(pending), len(seqs), from, to, c.wait, pending[0])
			}
			if time.Now().After(resend) {
				break
			}
			c.waitSignal(to, 20*time.Millisecond)
		}
	}
}

// waitSignal waits until node id receives something or d passes.
func (c *checker) waitSignal(id raft.NodeID, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.nodes[id].signal:
	case <-t.C:
	}
}

// received returns a copy of everything node id was handed.
func (c *checker) received(id raft.NodeID) []raft.Message {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

// seqRange returns [lo, hi).
func seqRange(lo, hi uint64) []uint64 {
	s := make([]uint64, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

// bigSeq and up are sequence numbers of large messages (see bigMessage).
const bigSeq = 1 << 40

// testMessage builds the message with sequence number seq from -> to. Its
// shape (type, entries, snapshot fields) varies with seq so the suite
// covers every field, and its content is a function of (from, to, seq) so
// the receiver can check it arrived intact.
func testMessage(from, to raft.NodeID, seq uint64) raft.Message {
	m := raft.Message{From: from, To: to, Index: seq, Term: seq/7 + 1, Context: uint64(from)<<32 ^ seq}
	switch seq % 6 {
	case 0:
		m.Type, m.Commit = raft.MsgHeartbeat, seq/2
	case 1:
		m.Type, m.LogTerm, m.Commit = raft.MsgApp, m.Term, seq/3
		for i := range seq%4 + 1 {
			m.Entries = append(m.Entries, raft.Entry{Index: seq + i + 1, Term: m.Term, Type: raft.EntryNormal, Data: pattern(seq+i, int(seq%97)+int(i)*13)})
		}
	case 2:
		m.Type, m.Reject, m.RejectHint, m.LogTerm = raft.MsgAppResp, seq%4 == 0, seq/5, seq/11
	case 3:
		m.Type, m.LogTerm = raft.MsgVote, seq/3
	case 4:
		m.Type, m.SnapshotOffset, m.SnapshotDone = raft.MsgSnap, seq*1024, seq%5 == 0
		m.Snapshot = raft.SnapshotMeta{Index: seq, Term: m.Term, Config: raft.Configuration{Servers: []raft.Server{
			{ID: from, Addr: fmt.Sprintf("host-%d:7000", from)}, {ID: to, Suffrage: raft.Learner},
		}}}
		m.SnapshotData = pattern(seq, 4096)
	case 5:
		m.Type = raft.MsgReadIndexResp
	}
	return m
}

// bigMessage is a snapshot chunk of size bytes: the large message a
// transport must carry without corrupting it or stalling other peers.
func bigMessage(from, to raft.NodeID, seq uint64, size int) raft.Message {
	return raft.Message{
		Type: raft.MsgSnap, From: from, To: to, Index: seq, Term: 3, SnapshotOffset: 0, SnapshotDone: true,
		Snapshot:     raft.SnapshotMeta{Index: 1000, Term: 3, Config: raft.Configuration{Servers: []raft.Server{{ID: from}, {ID: to}}}},
		SnapshotData: pattern(seq, size),
	}
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(seed uint64, n int) []byte {
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// equalMessages compares messages treating nil and empty slices alike.
func equalMessages(a, b raft.Message) bool {
	if !bytes.Equal(a.SnapshotData, b.SnapshotData) || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
			return false
		}
	}
	if len(a.Snapshot.Config.Servers) != len(b.Snapshot.Config.Servers) {
		return false
	}
	if len(a.Snapshot.Config.Servers) > 0 && !reflect.DeepEqual(a.Snapshot.Config.Servers, b.Snapshot.Config.Servers) {
		return false
	}
	a.SnapshotData, b.SnapshotData = nil, nil
	a.Entries, b.Entries = nil, nil
	a.Snapshot.Config, b.Snapshot.Config = raft.Configuration{}, raft.Configuration{}
	return reflect.DeepEqual(a, b)
}
