package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// slowDisk is a MemoryStorage that behaves like a disk: every Save
// takes delay, and while the gate is closed Save blocks (a stalled disk).
type slowDisk struct {
	*MemoryStorage
	delay time.Duration

	mu     sync.Mutex
	gate   chan struct{} // nil: open
	saves  [][]Entry     // entries of every Save, recorded when it starts
	hss    []HardState
	ops    []string // "save", "compact N" and anything a test adds, in order
	failAt int      // if > 0, the failAt-th Save fails
}

func newSlowDisk(delay time.Duration) *slowDisk {
	return &slowDisk{MemoryStorage: NewMemoryStorage(), delay: delay}
}

var errDiskFailed = errors.New("disk failed")

func (s *slowDisk) Save(hs HardState, ents []Entry) error {
	s.mu.Lock()
	s.saves = append(s.saves, ents)
	s.hss = append(s.hss, hs)
	s.ops = append(s.ops, "save")
	gate, n := s.gate, len(s.saves)
	fail := s.failAt > 0 && n == s.failAt
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	time.Sleep(s.delay)
	if fail {
		return errDiskFailed
	}
	return s.MemoryStorage.Save(hs, ents)
}

func (s *slowDisk) Compact(index uint64) error {
	s.record(fmt.Sprintf("compact %d", index))
	return nil
}

func (s *slowDisk) record(op string) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

func (s *slowDisk) close() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *slowDisk) open() {
	s.mu.Lock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	s.mu.Unlock()
}

func (s *slowDisk) saveCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.saves)
}

func ents(term uint64, idx ...uint64) []Entry {
	out := make([]Entry, len(idx))
	for i, x := range idx {
		out[i] = Entry{Index: x, Term: term, Type: EntryNormal}
	}
	return out
}

func sameEntry(a, b Entry) bool { return a.Index == b.Index && a.Term == b.Term }

func indexes(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Index
	}
	return out
}

func TestMergeEntriesKeepsInputsIntact(t *testing.T) {
	a := ents(1, 1, 2, 3, 4)
	a = a[:4:4]
	b := ents(2, 3, 4, 5)
	aCopy, bCopy := slices.Clone(a), slices.Clone(b)
	got, owned := mergeEntries(a, b, false)
	if !owned {
		t.Fatal("merging into a Core slice must allocate")
	}
	want := []Entry{a[0], a[1], b[0], b[1], b[2]}
	if !slices.EqualFunc(got, want, sameEntry) {
		t.Fatalf("merged %v, want %v", got, want)
	}
	// Appending more to the owned result must not touch a or b.
	got, _ = mergeEntries(got, ents(2, 6), owned)
	if !slices.EqualFunc(a, aCopy, sameEntry) || !slices.EqualFunc(b, bCopy, sameEntry) {
		t.Fatal("mergeEntries wrote into its inputs")
	}
	if !slices.Equal(indexes(got), []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("indexes %v", indexes(got))
	}
	// A later write starting at or before the first replaces everything.
	if got, owned := mergeEntries(got, ents(3, 1, 2), true); owned || !slices.Equal(indexes(got), []uint64{1, 2}) {
		t.Fatalf("replace: %v owned=%v", indexes(got), owned)
	}
	if got, _ := mergeEntries(nil, nil, false); got != nil {
		t.Fatalf("empty merge: %v", got)
	}
}

// TestPersisterGroupsQueuedWrites: jobs queued while a write is in flight
// go out together in one Save, holding the last hard state and the log a
// sequential writer would leave; their messages follow the write, in order.
func TestPersisterGroupsQueuedWrites(t *testing.T) {
	st := newSlowDisk(0)
	send := func(ms []Message) {
		for _, m := range ms {
			st.record(fmt.Sprintf("msg %d", m.Index))
		}
	}
	p := newPersister(st, send, t.Logf)
	defer p.stop()

	st.close()
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1, Commit: 0}, Entries: ents(1, 1, 2)}, sync: true, msgs: []Message{{Index: 1}}})
	waitFor(t, 5*time.Second, "the first write to start", func() bool { return st.saveCount() == 1 })
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1, Commit: 1}, Entries: ents(1, 3, 4)}, sync: true, msgs: []Message{{Index: 2}}})
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 2, Vote: 3, Commit: 1}, Entries: ents(2, 4, 5)}, sync: true, msgs: []Message{{Index: 3}}})
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 2, Vote: 3, Commit: 2}}, msgs: []Message{{Index: 4}}})
	p.submit(persistJob{compactTo: 1})
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 2, Vote: 3, Commit: 2}}, msgs: []Message{{Index: 5}}})
	st.open()

	var done []persistJob
	waitFor(t, 5*time.Second, "all jobs to be reported", func() bool {
		var err error
		done, err = p.results(done)
		if err != nil {
			t.Fatal(err)
		}
		return len(done) == 6
	})
	for i, j := range done {
		if want := []uint64{1, 2, 3, 4, 0, 5}[i]; len(j.msgs) != int(min(want, 1)) || (want > 0 && j.msgs[0].Index != want) {
			t.Fatalf("job %d reported out of order: %+v", i, j)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	// One write for the five jobs queued behind the first (group commit);
	// the compaction after the writes queued before it; every message
	// after the write it depends on, in order.
	want := []string{"save", "msg 1", "save", "msg 2", "msg 3", "msg 4", "compact 1", "msg 5"}
	if !slices.Equal(st.ops, want) {
		t.Fatalf("operations %q, want %q", st.ops, want)
	}
	if got := indexes(st.saves[1]); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("second Save wrote indexes %v, want [3 4 5]", got)
	}
	if st.saves[1][1].Term != 2 {
		t.Fatalf("entry 4 has term %d, want the overwriting term 2", st.saves[1][1].Term)
	}
	if want := (HardState{Term: 2, Vote: 3, Commit: 2}); st.hss[1] != want {
		t.Fatalf("second Save wrote hard state %+v, want %+v", st.hss[1], want)
	}
}

// TestPersisterFoldsAcceptancesOfOneWrite: the acceptances of appends
// written together leave in one Send, as one message per leader and term.
func TestPersisterFoldsAcceptancesOfOneWrite(t *testing.T) {
	st := newSlowDisk(0)
	var mu sync.Mutex
	var sends [][]Message
	send := func(ms []Message) {
		mu.Lock()
		sends = append(sends, slices.Clone(ms))
		mu.Unlock()
	}
	p := newPersister(st, send, t.Logf)
	defer p.stop()

	acc := func(idx uint64) []Message { return []Message{{Type: MsgAppResp, From: 2, To: 1, Term: 1, Index: idx}} }
	st.close()
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1}, Entries: ents(1, 1)}, sync: true, msgs: acc(1)})
	waitFor(t, 5*time.Second, "the first write to start", func() bool { return st.saveCount() == 1 })
	for i := uint64(2); i <= 5; i++ {
		p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1}, Entries: ents(1, i)}, sync: true, msgs: acc(i)})
	}
	st.open()
	waitFor(t, 5*time.Second, "the acceptance of index 5", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(sends) == 0 {
			return false
		}
		last := sends[len(sends)-1]
		return last[len(last)-1].Index == 5
	})
	mu.Lock()
	defer mu.Unlock()
	if len(sends) != 2 || len(sends[1]) != 1 {
		t.Fatalf("acceptances of the second write sent as %v, want one for index 5", sends[1])
	}
}

// TestPersisterStopsAtFailedWrite: a failed Save is reported, its messages
// are never sent and nothing queued after it is written.
func TestPersisterStopsAtFailedWrite(t *testing.T) {
	st := newSlowDisk(0)
	st.failAt = 2
	var mu sync.Mutex
	var sent []uint64
	p := newPersister(st, func(ms []Message) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range ms {
			sent = append(sent, m.Index)
		}
	}, t.Logf)
	defer p.stop()
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1}, Entries: ents(1, 1)}, sync: true, msgs: []Message{{Index: 1}}})
	var done []persistJob
	var err error
	waitFor(t, 5*time.Second, "the first job", func() bool { done, err = p.results(done); return len(done) == 1 })
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1}, Entries: ents(1, 2)}, sync: true, msgs: []Message{{Index: 2}}})
	waitFor(t, 5*time.Second, "the failure", func() bool { done, err = p.results(done); return err != nil })
	if !errors.Is(err, errDiskFailed) {
		t.Fatalf("err = %v", err)
	}
	p.submit(persistJob{rd: Ready{HardState: HardState{Term: 1}, Entries: ents(1, 2)}, sync: true, msgs: []Message{{Index: 3}}})
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sent, []uint64{1}) || len(done) != 1 || st.saveCount() != 2 {
		t.Fatalf("after a failed write: sent %v, %d jobs reported, %d Saves", sent, len(done), st.saveCount())
	}
}

// TestLeaderWithStalledDiskKeepsLeading: while the leader's disk is stuck
// in a write, its loop keeps heartbeating and replicating, so there is no
// election and the followers commit (and apply) without it; the leader
// applies once its own write completes. With writes on the loop, the
// stalled leader would fall silent and be deposed.
func TestLeaderWithStalledDiskKeepsLeading(t *testing.T) {
	net := NewNetwork(1)
	defer net.Close()
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := map[NodeID]*Node{}
	sms := map[NodeID]*counterSM{}
	stores := map[NodeID]*slowDisk{}
	for _, s := range peers {
		cfg := testConfig(s.ID)
		cfg.Peers = peers
		stores[s.ID] = newSlowDisk(200 * time.Microsecond) // a disk, not memory
		sms[s.ID] = &counterSM{}
		nd, err := NewNode(cfg, sms[s.ID], stores[s.ID], net.Transport(s.ID))
		if err != nil {
			t.Fatal(err)
		}
		nodes[s.ID] = nd
	}
	defer func() {
		for _, s := range stores {
			s.open()
		}
		for _, nd := range nodes {
			nd.Stop()
		}
	}()
	var lead NodeID
	waitFor(t, electTimeout, "a leader", func() bool {
		lead = nodes[1].Leader()
		return lead != None && nodes[2].Leader() == lead && nodes[3].Leader() == lead
	})
	ctx := context.Background()
	for i := range 20 { // enough Saves for the node to see its disk is slow
		if _, err := nodes[lead].Propose(ctx, []byte{'a' + byte(i%26)}); err != nil {
			t.Fatal(err)
		}
	}
	term := nodes[lead].Status().Term

	stores[lead].close()
	done := make(chan error, 1)
	go func() {
		_, err := nodes[lead].Propose(ctx, []byte("stalled"))
		done <- err
	}()
	var followers []NodeID
	for id := range nodes {
		if id != lead {
			followers = append(followers, id)
		}
	}
	waitFor(t, applyTimeout, "the followers to apply the proposal without the leader's disk", func() bool {
		for _, id := range followers {
			if c := sms[id].commands(); len(c) == 0 || c[len(c)-1] != "stalled" {
				return false
			}
		}
		return true
	})
	// Several election timeouts, counted in messages: 30 heartbeat rounds.
	sent := net.Stats().Sent
	waitFor(t, applyTimeout, "the leader to keep sending", func() bool { return net.Stats().Sent >= sent+120 })
	for id, nd := range nodes {
		if s := nd.Status(); s.Term != term || s.Leader != lead {
			t.Fatalf("node %d: term %d leader %d while the leader's disk stalled; want term %d leader %d", id, s.Term, s.Leader, term, lead)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("proposal returned before the leader's own write finished: %v", err)
	default:
	}
	if c := sms[lead].commands(); len(c) > 0 && c[len(c)-1] == "stalled" {
		t.Fatal("the leader applied an entry its own disk had not written")
	}
	stores[lead].open()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("proposal failed after the disk recovered: %v", err)
		}
	case <-time.After(applyTimeout):
		t.Fatal("proposal did not complete after the disk recovered")
	}
}

type refusingTransport struct{ Transport }

func (refusingTransport) Start(func(Message)) error { return errors.New("address in use") }

// TestNewNodeTransportFailureLeavesNothingRunning: a transport that cannot
// start fails NewNode and leaves no goroutine behind (goleak checks it).
func TestNewNodeTransportFailureLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	net := NewNetwork(1)
	defer net.Close()
	cfg := testConfig(1)
	cfg.Peers = []Server{{ID: 1}}
	_, err := NewNode(cfg, &counterSM{}, NewMemoryStorage(), refusingTransport{net.Transport(1)})
	if err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("NewNode = %v, want the transport's error", err)
	}
}

// eagerTransport delivers a message from inside StartInline, as a transport
// whose reader is already running may.
type eagerTransport struct {
	Transport
	m Message
}

func (e eagerTransport) StartInline(deliver func(Message, bool)) error {
	if err := e.Start(func(Message) {}); err != nil {
		return err
	}
	deliver(e.m, false)
	return nil
}

// A message delivered inline the moment the transport starts is stepped
// and written like any other: NewNode has everything in place first.
func TestNewNodeStepsAMessageDeliveredAsTheTransportStarts(t *testing.T) {
	net := NewNetwork(1)
	defer net.Close()
	cfg := testConfig(1)
	cfg.Peers = []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	st := newSlowDisk(0) // writes go to the persister until Saves prove fast
	hb := Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 5}
	n, err := NewNode(cfg, &counterSM{}, st, eagerTransport{net.Transport(1), hb})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	waitFor(t, 5*time.Second, "the heartbeat's term to be adopted", func() bool { return n.Status().Term == 5 })
}
