package raft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is still running
// when they finish: every Node must release everything on Stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m) // exits with the tests' status
}

// counterSM is a test state machine: it records applied commands in order
// and returns the index as the result. It also checks the StateMachine
// contract its own lock would hide: no two calls overlap, and Apply sees
// indexes in increasing order.
type counterSM struct {
	mu   sync.Mutex
	cmds [][]byte
	last uint64

	calls      atomic.Int32 // calls in progress
	broken     atomic.Value // string: the first contract violation seen
	applyDelay atomic.Int64 // nanoseconds each Apply takes, to play a slow state machine
	restores   atomic.Int32 // Restore calls
}

// enter records a call starting; the returned func records it ending.
func (s *counterSM) enter(name string) func() {
	if n := s.calls.Add(1); n != 1 {
		s.broken.CompareAndSwap(nil, fmt.Sprintf("%s called while %d other calls were in progress", name, n-1))
	}
	return func() { s.calls.Add(-1) }
}

// violation returns the first contract violation seen, or "".
func (s *counterSM) violation() string {
	v, _ := s.broken.Load().(string)
	return v
}

func (s *counterSM) Apply(e Entry) any {
	defer s.enter("Apply")()
	if d := s.applyDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Index <= s.last {
		s.broken.CompareAndSwap(nil, fmt.Sprintf("Apply(%d) after Apply(%d)", e.Index, s.last))
	}
	s.cmds = append(s.cmds, e.Data)
	s.last = e.Index
	return e.Index
}

func (s *counterSM) Snapshot() (Snapshot, error) {
	defer s.enter("Snapshot")()
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	binary.Write(&buf, binary.BigEndian, uint64(len(s.cmds)))
	for _, c := range s.cmds {
		binary.Write(&buf, binary.BigEndian, uint32(len(c)))
		buf.Write(c)
	}
	return bytesSnapshot(buf.Bytes()), nil
}

func (s *counterSM) Restore(r io.Reader) error {
	defer s.enter("Restore")()
	s.restores.Add(1)
	var n uint64
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err
	}
	cmds := make([][]byte, 0, n)
	for range n {
		var l uint32
		if err := binary.Read(r, binary.BigEndian, &l); err != nil {
			return err
		}
		c := make([]byte, l)
		if _, err := io.ReadFull(r, c); err != nil {
			return err
		}
		cmds = append(cmds, c)
	}
	s.mu.Lock()
	s.cmds = cmds
	s.mu.Unlock()
	return nil
}

func (s *counterSM) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.cmds))
	for i, c := range s.cmds {
		out[i] = string(c)
	}
	return out
}

type bytesSnapshot []byte

func (b bytesSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}
func (b bytesSnapshot) Release() {}

// testCluster is a cluster of Nodes on an in-memory Network.
type testCluster struct {
	t      testing.TB
	net    *Network
	cfg    Config
	peers  []Server
	nodes  map[NodeID]*Node
	sms    map[NodeID]*counterSM
	allSMs []*counterSM // every state machine started, checked at cleanup
	stores map[NodeID]*MemoryStorage
	inline bool // nodes use readerTransports (set from inlineClusters)

	// obsMu guards the election-safety record kept by the Observer hook.
	obsMu      sync.Mutex
	leaderOf   map[uint64]NodeID // term -> the node that led it
	violations []string
}

func testConfig(id NodeID) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.TickInterval = 2 * time.Millisecond
	cfg.ElectionTicks = 20
	cfg.HeartbeatTicks = 2
	return cfg
}

func newTestCluster(t testing.TB, n int, tweak func(*Config)) *testCluster {
	c := &testCluster{t: t, net: NewNetwork(1), nodes: map[NodeID]*Node{}, sms: map[NodeID]*counterSM{}, stores: map[NodeID]*MemoryStorage{}, leaderOf: map[uint64]NodeID{}, inline: inlineClusters}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, Server{ID: NodeID(i)})
	}
	c.cfg = testConfig(0)
	if tweak != nil {
		tweak(&c.cfg)
	}
	for i := 1; i <= n; i++ {
		c.stores[NodeID(i)] = NewMemoryStorage()
		c.start(NodeID(i))
	}
	t.Cleanup(func() {
		c.stopAll()
		c.checkElectionSafety()
		for _, sm := range c.allSMs {
			if v := sm.violation(); v != "" {
				t.Errorf("state machine contract broken: %s", v)
			}
		}
	})
	return c
}

// observe records every node that became leader, by term, so a test can
// check at the end that no term had two leaders (Raft paper, section 5.2).
func (c *testCluster) observe(o Observation) {
	if o.Role != Leader {
		return
	}
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	if prev, ok := c.leaderOf[o.Term]; ok && prev != o.ID {
		c.violations = append(c.violations, fmt.Sprintf("nodes %d and %d both led term %d", prev, o.ID, o.Term))
	}
	c.leaderOf[o.Term] = o.ID
}

func (c *testCluster) checkElectionSafety() {
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	for _, v := range c.violations {
		c.t.Errorf("election safety: %s", v)
	}
}

func (c *testCluster) start(id NodeID) *Node {
	cfg := c.cfg
	cfg.ID = id
	cfg.Peers = c.peers
	user := cfg.Observer
	cfg.Observer = func(o Observation) {
		c.observe(o)
		if user != nil {
			user(o)
		}
	}
	sm := &counterSM{}
	tr := c.net.Transport(id)
	if c.inline {
		tr = newReaderTransport(tr)
	}
	nd, err := NewNode(cfg, sm, c.stores[id], tr)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id], c.sms[id] = nd, sm
	c.allSMs = append(c.allSMs, sm)
	return nd
}

func (c *testCluster) stop(id NodeID) {
	if nd := c.nodes[id]; nd != nil {
		nd.Stop()
		delete(c.nodes, id)
	}
}

func (c *testCluster) stopAll() {
	for id := range c.nodes {
		c.stop(id)
	}
	c.net.Close()
}

// waitLeader waits until all running nodes agree on one leader, and
// returns it.
func (c *testCluster) waitLeader(timeout time.Duration) NodeID {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		// The leader of the highest term must be known to every running
		// member of its configuration (nodes waiting to join, or removed,
		// are not asked).
		var lead Status
		statuses := make(map[NodeID]Status, len(c.nodes))
		for id, nd := range c.nodes {
			s := nd.Status()
			statuses[id] = s
			if s.Role == Leader && s.Term >= lead.Term {
				lead = s
			}
		}
		ok := lead.ID != None
		for id, s := range statuses {
			if _, member := lead.Config.Server(id); ok && member && s.Leader != lead.ID {
				ok = false
			}
		}
		if ok {
			return lead.ID
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.t.Fatalf("no agreed leader within %v", timeout)
	return None
}

func (c *testCluster) propose(id NodeID, cmd string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.nodes[id].Propose(ctx, []byte(cmd))
}

// mustPropose commits cmd exactly once, retrying on whichever node leads.
// When a proposal's outcome is unknown (leadership lost, timeout) it asks
// the current leader for a linearizable read first: if cmd is not applied
// there by then, it can never commit, so proposing again cannot apply it
// twice.
func (c *testCluster) mustPropose(cmd string) {
	c.t.Helper()
	if err := c.tryPropose(cmd, 30*time.Second); err != nil {
		c.t.Fatal(err)
	}
}

// tryPropose is mustPropose without failing the test, for use from other
// goroutines. It returns the proposal's result when it knows it.
func (c *testCluster) tryPropose(cmd string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	unsure := false
	for time.Now().Before(deadline) {
		lead := c.currentLeader()
		if lead == None {
			time.Sleep(time.Millisecond)
			continue
		}
		nd := c.nodes[lead]
		if unsure {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := nd.Read(ctx)
			cancel()
			if err != nil {
				continue
			}
			if slices.Contains(c.sms[lead].commands(), cmd) {
				return nil
			}
			unsure = false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := nd.Propose(ctx, []byte(cmd))
		cancel()
		var nl *NotLeaderError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &nl), errors.Is(err, ErrProposalDropped):
			// Surely not appended: just retry.
		default:
			unsure = true
		}
	}
	return fmt.Errorf("could not commit %q within %v", cmd, timeout)
}

// currentLeader returns a running node that reports itself leader in the
// highest term, or None. It never fails the test, so any goroutine may call
// it while the test goroutine is not starting or stopping nodes.
func (c *testCluster) currentLeader() NodeID {
	var lead NodeID
	var term uint64
	for _, nd := range c.nodes {
		if s := nd.Status(); s.Role == Leader && s.Term >= term && !s.Stopped {
			lead, term = s.ID, s.Term
		}
	}
	return lead
}

// waitApplied waits until every running node applied the commands want.
func (c *testCluster) waitApplied(want []string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var bad string
		for id := range c.nodes {
			got := c.sms[id].commands()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				ok = false
				bad = fmt.Sprintf("node %d has %v", id, got)
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("want %v applied everywhere; %s", want, bad)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitLeaderAmong waits until exactly one of ids is leader and every other
// running node of ids knows it, and returns it.
func (c *testCluster) waitLeaderAmong(timeout time.Duration, ids ...NodeID) NodeID {
	c.t.Helper()
	var lead NodeID
	waitFor(c.t, timeout, "an agreed leader among the given nodes", func() bool {
		lead = None
		for _, id := range ids {
			if nd := c.nodes[id]; nd != nil && nd.Status().Role == Leader {
				if lead != None {
					return false
				}
				lead = id
			}
		}
		if lead == None {
			return false
		}
		for _, id := range ids {
			if nd := c.nodes[id]; nd != nil && nd.Leader() != lead {
				return false
			}
		}
		return true
	})
	return lead
}

// followers returns the running nodes other than lead.
func (c *testCluster) followers(lead NodeID) []NodeID {
	var out []NodeID
	for _, p := range c.peers {
		if p.ID != lead && c.nodes[p.ID] != nil {
			out = append(out, p.ID)
		}
	}
	return out
}

// waitFor polls cond until it holds or timeout passes, then fails the test
// naming what it waited for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// simNet is a deterministic in-test harness for Cores: no goroutines, no
// clock. It persists every Ready to a MemoryStorage before delivering its
// messages (in FIFO order), records applied entries, and checks election
// safety (at most one leader per term) after every step.
type simNet struct {
	t       testing.TB
	ids     []NodeID
	cfgs    map[NodeID]Config
	cores   map[NodeID]*Core
	stores  map[NodeID]*MemoryStorage
	applied map[NodeID][]Entry
	reads   map[NodeID][]ReadState
	down    map[NodeID]bool
	cut     map[[2]NodeID]bool
	queue   []Message
	seed    uint64
	ticks   int

	// drop, if set, decides per message whether the network loses it.
	drop func(Message) bool
	// onDeliver, if set, sees every message just before it is stepped.
	onDeliver func(Message)
	// rewrite, if set, may change a message in flight (for control runs).
	rewrite func(Message) Message
	// chaos, if set, delivers queued messages in random order and
	// duplicates some.
	chaos *rand.Rand
	// leaders records the leader of every term seen (election safety).
	leaders map[uint64]NodeID
}

// simConfig is the Config used by simNet: elections after 10-20 ticks,
// heartbeats every 2.
func simConfig(id NodeID) Config {
	cfg := testConfig(id)
	cfg.ElectionTicks = 10
	cfg.HeartbeatTicks = 2
	return cfg
}

func newSimNet(t testing.TB, n int, seed uint64, tweak func(*Config)) *simNet {
	t.Helper()
	s := &simNet{
		t: t, seed: seed,
		cfgs: map[NodeID]Config{}, cores: map[NodeID]*Core{}, stores: map[NodeID]*MemoryStorage{},
		applied: map[NodeID][]Entry{}, reads: map[NodeID][]ReadState{}, down: map[NodeID]bool{}, cut: map[[2]NodeID]bool{},
		leaders: map[uint64]NodeID{},
	}
	var peers []Server
	for i := 1; i <= n; i++ {
		peers = append(peers, Server{ID: NodeID(i)})
		s.ids = append(s.ids, NodeID(i))
	}
	for _, id := range s.ids {
		cfg := simConfig(id)
		cfg.Peers = peers
		if tweak != nil {
			tweak(&cfg)
		}
		s.cfgs[id] = cfg
		s.stores[id] = NewMemoryStorage()
		s.boot(id)
	}
	s.flush()
	return s
}

// boot (re)creates id's Core from its storage.
func (s *simNet) boot(id NodeID) {
	s.t.Helper()
	st, err := s.stores[id].Load()
	if err != nil {
		s.t.Fatalf("load %d: %v", id, err)
	}
	c, err := NewCore(s.cfgs[id], st, rand.New(rand.NewPCG(s.seed, uint64(id))))
	if err != nil {
		s.t.Fatalf("NewCore %d: %v", id, err)
	}
	s.cores[id] = c
	s.applied[id] = nil
}

// crash stops id: it neither ticks nor receives until restart.
func (s *simNet) crash(id NodeID) { s.down[id] = true }

// restart brings id back from what its storage holds.
func (s *simNet) restart(id NodeID) {
	s.boot(id)
	delete(s.down, id)
	s.flush()
}

// isolate cuts id off from everyone in both directions.
func (s *simNet) isolate(id NodeID) {
	for _, o := range s.ids {
		if o != id {
			s.cut[[2]NodeID{id, o}] = true
			s.cut[[2]NodeID{o, id}] = true
		}
	}
}

func (s *simNet) heal() { clear(s.cut) }

// collect carries out every pending Ready: persist, queue messages, apply.
func (s *simNet) collect() {
	for progress := true; progress; {
		progress = false
		for _, id := range s.ids {
			c := s.cores[id]
			if s.down[id] || !c.HasReady() {
				continue
			}
			progress = true
			rd := c.Ready()
			if rd.Snapshot != nil {
				if err := s.stores[id].SaveSnapshot(*rd.Snapshot, bytes.NewReader(rd.SnapshotData)); err != nil {
					s.t.Fatalf("node %d: save snapshot: %v", id, err)
				}
			}
			if rd.MustSync {
				if err := s.stores[id].Save(rd.HardState, rd.Entries); err != nil {
					s.t.Fatalf("node %d: save: %v", id, err)
				}
			}
			s.queue = append(s.queue, rd.Messages...)
			s.applied[id] = append(s.applied[id], rd.CommittedEntries...)
			s.reads[id] = append(s.reads[id], rd.ReadStates...)
			c.Advance(rd)
			s.checkSafety()
		}
	}
}

func (s *simNet) checkSafety() {
	for _, id := range s.ids {
		c := s.cores[id]
		if c.Role() != Leader {
			continue
		}
		if prev, ok := s.leaders[c.Term()]; ok && prev != id {
			s.t.Fatalf("election safety: nodes %d and %d are both leader in term %d", prev, id, c.Term())
		}
		s.leaders[c.Term()] = id
	}
}

// flush delivers messages until the cluster is quiet.
func (s *simNet) flush() {
	s.t.Helper()
	for steps := 0; ; steps++ {
		if steps > 1_000_000 {
			s.t.Fatalf("simNet: no quiescence after %d deliveries", steps)
		}
		s.collect()
		if len(s.queue) == 0 {
			return
		}
		var m Message
		if s.chaos != nil {
			i := s.chaos.IntN(len(s.queue))
			m = s.queue[i]
			if s.chaos.IntN(10) == 0 {
				s.queue = append(s.queue, m) // deliver twice
			}
			s.queue = slices.Delete(s.queue, i, i+1)
		} else {
			m = s.queue[0]
			s.queue = s.queue[1:]
		}
		if s.down[m.To] || s.down[m.From] || s.cut[[2]NodeID{m.From, m.To}] || s.cores[m.To] == nil {
			continue
		}
		if s.drop != nil && s.drop(m) {
			continue
		}
		if s.rewrite != nil {
			m = s.rewrite(m)
		}
		if s.onDeliver != nil {
			s.onDeliver(m)
		}
		s.cores[m.To].Step(m)
		s.checkSafety()
	}
}

// tick advances every running node's clock by one tick and delivers what
// follows.
func (s *simNet) tick() {
	for _, id := range s.ids {
		if !s.down[id] {
			s.cores[id].Tick()
		}
	}
	s.ticks++
	s.flush()
}

// leader returns the node every running, connected node follows, or None.
func (s *simNet) leader() NodeID {
	var lead NodeID
	for _, id := range s.ids {
		if s.down[id] {
			continue
		}
		if s.cores[id].Role() == Leader {
			if lead != None {
				return None
			}
			lead = id
		}
	}
	return lead
}

// agreedLeader returns the leader if every running node in ids knows it.
func (s *simNet) agreedLeader(ids ...NodeID) NodeID {
	if len(ids) == 0 {
		ids = s.ids
	}
	lead := s.leader()
	if lead == None {
		return None
	}
	for _, id := range ids {
		if !s.down[id] && s.cores[id].Leader() != lead {
			return None
		}
	}
	return lead
}

// tickUntil ticks until cond holds, at most max ticks; it returns the
// number of ticks taken and whether cond held.
func (s *simNet) tickUntil(max int, cond func() bool) (int, bool) {
	for i := 0; i <= max; i++ {
		if cond() {
			return i, true
		}
		if i < max {
			s.tick()
		}
	}
	return max, false
}

func (s *simNet) mustElect(ids ...NodeID) NodeID {
	s.t.Helper()
	var lead NodeID
	if _, ok := s.tickUntil(500, func() bool { lead = s.agreedLeader(ids...); return lead != None }); !ok {
		s.t.Fatalf("no leader after 500 ticks")
	}
	return lead
}

func (s *simNet) propose(id NodeID, cmds ...string) uint64 {
	s.t.Helper()
	bs := make([][]byte, len(cmds))
	for i, c := range cmds {
		bs[i] = []byte(c)
	}
	idx, err := s.cores[id].Propose(bs...)
	if err != nil {
		s.t.Fatalf("propose on %d: %v", id, err)
	}
	s.flush()
	return idx
}

// commands returns the normal commands id applied, in order.
func (s *simNet) commands(id NodeID) []string {
	var out []string
	for _, e := range s.applied[id] {
		if e.Type == EntryNormal {
			out = append(out, string(e.Data))
		}
	}
	return out
}

// inlineClusters makes newTestCluster give its nodes readerTransports, so
// the cluster tests run with messages handled on the delivering goroutine
// (see TestClusterWithInlineDelivery).
var inlineClusters bool

// readerTransport wraps an in-memory transport so that the node sees what
// a network transport gives it: an InlineDeliverer whose messages arrive on
// a reader goroutine per sender (as on one connection per peer), with more
// set while others from that sender wait behind them.
type readerTransport struct {
	Transport
	mu      sync.Mutex
	readers map[NodeID]chan Message
	deliver func(Message, bool)
	quit    chan struct{}
	wg      sync.WaitGroup
}

func newReaderTransport(tr Transport) *readerTransport {
	return &readerTransport{Transport: tr, readers: map[NodeID]chan Message{}, quit: make(chan struct{})}
}

func (r *readerTransport) StartInline(deliver func(Message, bool)) error {
	r.deliver = deliver
	return r.Transport.Start(func(m Message) {
		select {
		case r.reader(m.From) <- m:
		default: // lost, as a full socket buffer would lose it
		}
	})
}

// reader returns the inbox of the reader goroutine for messages from id,
// starting it on first use.
func (r *readerTransport) reader(id NodeID) chan Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.readers[id]
	if in == nil {
		in = make(chan Message, 1024)
		r.readers[id] = in
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case m := <-in:
					r.deliver(m, len(in) > 0)
				case <-r.quit:
					return
				}
			}
		}()
	}
	return in
}

func (r *readerTransport) Close() error {
	err := r.Transport.Close()
	close(r.quit)
	r.wg.Wait()
	return err
}
