package rafttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/raftgo/raft"
)

// Result is what a run that passed every check reports.
type Result struct {
	Seed  uint64
	Nodes int
	// History is every client request with its invocation and response
	// times (see Op), for a linearizability checker.
	History []Op
	// LivenessTicks is how many ticks after the heal it took until a
	// leader committed a new proposal.
	LivenessTicks int
	// ConvergeTicks is how many ticks after the heal it took until every
	// replica had applied the same log.
	ConvergeTicks int
	// Configuration is the cluster configuration committed last.
	Configuration raft.Configuration
	Stats         Stats
}

// Stats counts what happened in a run.
type Stats struct {
	Events, Sent, Dropped, Duplicated, Delivered uint64
	Crashes, Restarts, Snapshots, SnapshotsSent  int
	// Leaders is the number of terms that had a leader; MaxTerm the
	// highest term reached.
	Leaders int
	MaxTerm uint64
	// Commit is the highest commit index reached.
	Commit uint64
	// Proposals and Reads count client requests that completed.
	Proposals, Reads int
	// MaxInFlight is the most messages that were in flight at once.
	MaxInFlight int
	// ConfChanges counts the membership changes of the schedule that
	// committed; ConfDropped those given up (see FaultAddLearner).
	// Retired counts removed nodes stopped.
	ConfChanges, ConfDropped, Retired int
}

// Op is one client request in a run's history. Call and Return are logical
// timestamps from one counter: an Op whose Return is lower than another's
// Call finished before the other began. A proposal whose outcome the
// client never learned (its node crashed, or it timed out) has Unknown set
// and Return math.MaxInt64: it may or may not have taken effect.
type Op struct {
	Client int
	Read   bool
	// Input is the proposed command, or the query of a read.
	Input []byte
	// Output is the state machine's Apply result for a proposal, or
	// Workload.Read's result for a read.
	Output       any
	Call, Return int64
	Unknown      bool
	// Node and Index say where the request was served.
	Node  raft.NodeID
	Index uint64
}

// Run runs one simulated cluster as opts describe. It returns a
// *Violation error when a check fails, and another error when opts are
// invalid.
func Run(opts Options) (*Result, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	return c.run()
}

type cluster struct {
	opts    Options
	tracing bool
	rng     *rand.Rand
	now     int64 // in sub-ticks
	tick    int
	net     *network
	// nodes holds the initial nodes and the fresh ones the schedule adds
	// (index = NodeID; [0] unused); a fresh node starts when a membership
	// change first names it.
	nodes   []*simNode
	peers   []raft.Server
	chk     *checker
	clients []*client
	history []Op
	stamp   int64
	readCtx uint64
	sched   []Fault
	// recoveries are the ends of leader-aimed faults, in tick order.
	recoveries []recovery
	err        *Violation
	stats      Stats
	healed     bool
	live       liveness
	// confQueue holds the membership faults not yet tried, in order;
	// confReq is the one being carried out.
	confQueue []Fault
	confReq   *confRequest
}

type simNode struct {
	id raft.NodeID
	up bool
	// started is false for a fresh node not yet started; retired is set
	// on a removed node stopped for good; removed once the committed
	// configuration has dropped the node (its ID is never added again).
	started, retired, removed bool
	core                      *raft.Core
	sm                        raft.StateMachine
	st                        *raft.MemoryStorage // what survives a crash
	durable                   raft.HardState      // the hard state in st
	pending                   []diskOp
	lastDone                  int64
	// diskDelay is the longest time one write takes, in sub-ticks.
	diskDelay int64
	phase     int // sub-tick at which this node ticks
	log       mirror
	// disk holds the term of every entry in st (durable), for the commit
	// quorum check.
	disk    diskLog
	applied uint64
	commit  uint64
	// incarnation counts the node's starts.
	incarnation int
	role        raft.Role
	term        uint64
	// checkedTerm/checkedCommit remember the last leader completeness
	// check, to skip repeating it.
	checkedTerm, checkedCommit uint64
	proposals                  map[uint64]*client // log index -> client waiting
	reads                      map[uint64]*client // read context -> client
}

func newCluster(opts Options) (*cluster, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &cluster{
		opts:    o,
		tracing: o.Trace != nil,
		rng:     rand.New(rand.NewPCG(o.Seed, 0x5eed5eed5eed5eed)),
		chk:     newChecker(),
	}
	c.stats.Events = 0
	netRand := rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64()))
	sched := o.Schedule
	if sched == nil {
		sched = GenerateSchedule(rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64())), o.Nodes, o.Ticks, o.Faults)
	}
	c.sched = sched.Faults
	// Make room for every node the schedule names (fresh nodes start
	// when a membership change first names them).
	ids := o.Nodes
	for _, f := range c.sched {
		if f.Kind != FaultRemove && int(f.Node) <= MaxNodes {
			ids = max(ids, int(f.Node))
		}
		for _, g := range f.Groups {
			for _, id := range g {
				ids = max(ids, min(int(id), MaxNodes))
			}
		}
	}
	c.net = newNetwork(netRand, ids)
	if c.tracing {
		c.tracef("run seed=%d nodes=%d ticks=%d prevote=%t checkquorum=%t inflight=%d maxsize=%d", o.Seed, o.Nodes, o.Ticks, o.PreVote, o.CheckQuorum, o.MaxInflightMsgs, o.MaxSizePerMsg)
		c.tracef("schedule %v", sched)
	}
	for i := 1; i <= o.Nodes; i++ {
		c.peers = append(c.peers, raft.Server{ID: raft.NodeID(i)})
	}
	c.nodes = make([]*simNode, ids+1)
	for i := 1; i <= o.Nodes; i++ {
		c.nodes[i] = &simNode{id: raft.NodeID(i), started: true, st: raft.NewMemoryStorage(), phase: c.rng.IntN(SubTicks)}
	}
	for i := o.Nodes + 1; i <= ids; i++ {
		c.nodes[i] = &simNode{id: raft.NodeID(i)}
	}
	c.chk.conf = raft.Configuration{Servers: slices.Clone(c.peers)}
	for i := range o.Workload.Clients {
		c.clients = append(c.clients, &client{id: i, nextAt: c.rng.Int64N(SubTicks * int64(o.Workload.ThinkTicks+1))})
	}
	for _, n := range c.nodes[1 : o.Nodes+1] {
		if err := c.start(n); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) config(id raft.NodeID) raft.Config {
	o := &c.opts
	cfg := raft.DefaultConfig()
	cfg.ID = id
	if int(id) <= c.opts.Nodes {
		cfg.Peers = c.peers
	}
	cfg.TickInterval = time.Millisecond
	cfg.ElectionTicks, cfg.HeartbeatTicks = o.ElectionTicks, o.HeartbeatTicks
	cfg.PreVote, cfg.CheckQuorum = o.PreVote, o.CheckQuorum
	cfg.MaxInflightMsgs, cfg.MaxSizePerMsg = o.MaxInflightMsgs, o.MaxSizePerMsg
	cfg.MaxApplyBatchBytes = 4 * o.MaxSizePerMsg
	cfg.SnapshotThreshold = 0
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	return cfg
}

// start (re)starts n from its durable state.
func (c *cluster) start(n *simNode) error {
	st, err := n.st.Load()
	if err != nil {
		return fmt.Errorf("rafttest: loading node %d: %w", n.id, err)
	}
	core, err := raft.NewCore(c.config(n.id), st, rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64())))
	if err != nil {
		return fmt.Errorf("rafttest: starting node %d: %w", n.id, err)
	}
	core.SetMutations(c.opts.Mutations)
	sm := c.opts.NewStateMachine()
	if sm == nil {
		return errors.New("rafttest: NewStateMachine returned nil")
	}
	if st.Snapshot.Index > 0 {
		_, rc, err := n.st.Snapshot()
		if err != nil {
			return fmt.Errorf("rafttest: node %d: opening stored snapshot: %w", n.id, err)
		}
		err = sm.Restore(rc)
		rc.Close()
		if err != nil {
			c.violate("determinism", "node %d: state machine cannot restore its own snapshot at index %d: %v", n.id, st.Snapshot.Index, err)
		}
	}
	status := core.Status()
	n.core, n.sm, n.up = core, sm, true
	n.incarnation++
	n.durable = st.HardState
	n.pending = n.pending[:0]
	n.lastDone = c.now
	n.applied, n.commit = status.Applied, status.Commit
	n.role, n.term = core.Role(), core.Term()
	n.checkedTerm, n.checkedCommit = 0, 0
	n.proposals = make(map[uint64]*client)
	n.reads = make(map[uint64]*client)
	// Rebuild the log mirror from what the Core loaded.
	off := status.FirstIndex - 1
	offTerm := st.CompactedTerm
	if off != st.CompactedIndex {
		offTerm = st.Snapshot.Term
	}
	n.log.reset(off, offTerm, c.chainOf(n, off, offTerm))
	n.disk.reset(off, offTerm)
	for i := range st.Entries {
		if e := &st.Entries[i]; e.Index > off {
			c.appendMirror(n, e)
			n.disk.append(e.Index, e.Term)
		}
	}
	if c.tracing {
		c.tracef("n%d start term=%d commit=%d applied=%d first=%d last=%d", n.id, status.Term, status.Commit, status.Applied, status.FirstIndex, status.LastIndex)
	}
	return nil
}

func (c *cluster) tracef(format string, args ...any) {
	if c.opts.Trace == nil {
		return
	}
	fmt.Fprintf(c.opts.Trace, "%d.%d ", c.now/SubTicks, c.now%SubTicks)
	fmt.Fprintf(c.opts.Trace, format, args...)
	io.WriteString(c.opts.Trace, "\n")
}

func (c *cluster) violate(check, format string, args ...any) {
	if c.err != nil {
		return
	}
	c.err = &Violation{Seed: c.opts.Seed, Nodes: c.opts.Nodes, Tick: c.tick, Check: check, Detail: fmt.Sprintf(format, args...)}
	if c.tracing {
		c.tracef("VIOLATION %s: %s", check, c.err.Detail)
	}
}

func (c *cluster) run() (*Result, error) {
	o := &c.opts
	si := 0
	healTick := o.Ticks
	limit := healTick + 2*o.LivenessTicks
	converged := -1
	for c.tick = 0; c.tick <= limit && c.err == nil; c.tick++ {
		if c.tick == healTick {
			c.heal()
		}
		for ; si < len(c.sched) && c.sched[si].Tick <= c.tick && !c.healed; si++ {
			c.inject(c.sched[si])
		}
		if !c.healed {
			c.recover()
			c.reconfigure()
		}
		for sub := range SubTicks {
			c.now = int64(c.tick)*SubTicks + int64(sub)
			c.step(sub)
			if c.err != nil {
				break
			}
		}
		c.expireClients()
		if c.healed && c.err == nil {
			if c.live.doneTick == 0 {
				c.driveLiveness()
				if c.live.doneTick == 0 && c.tick-healTick > o.LivenessTicks {
					c.violate("liveness", "no proposal committed within %d ticks after the faults healed (%s)", o.LivenessTicks, c.describe())
				}
			} else if c.converged() {
				converged = c.tick
				break
			}
		}
	}
	if c.err == nil && converged < 0 {
		c.violate("liveness", "replicas did not converge within %d ticks after the faults healed (%s)", 2*o.LivenessTicks, c.describe())
	}
	if c.err == nil {
		c.compareReplicas()
	}
	if c.err != nil {
		return nil, c.err
	}
	c.stats.Delivered, c.stats.Sent, c.stats.Dropped, c.stats.Duplicated = c.net.delivered, c.net.sent, c.net.dropped, c.net.duplicated
	c.stats.Leaders = len(c.chk.leaders)
	c.stats.Commit = c.chk.commitMax()
	return &Result{
		Seed: o.Seed, Nodes: o.Nodes, History: c.history,
		LivenessTicks: c.live.doneTick - healTick, ConvergeTicks: converged - healTick,
		Configuration: c.chk.conf.Clone(), Stats: c.stats,
	}, nil
}

// describe summarizes every node's state for failure messages.
func (c *cluster) describe() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "committed configuration %v at %d; ", c.chk.conf.Servers, c.chk.confIndex)
	for _, n := range c.nodes[1:] {
		switch {
		case !n.started:
			continue
		case n.retired:
			fmt.Fprintf(&b, "n%d retired; ", n.id)
			continue
		case !n.up:
			fmt.Fprintf(&b, "n%d down; ", n.id)
			continue
		}
		s := n.core.Status()
		fmt.Fprintf(&b, "n%d %s term=%d lead=%d commit=%d applied=%d last=%d pending-writes=%d; ", n.id, s.Role, s.Term, s.Leader, s.Commit, n.applied, s.LastIndex, len(n.pending))
	}
	return b.String()
}

// step runs one sub-tick: deliveries, disk completions, ticks, clients.
func (c *cluster) step(sub int) {
	for c.err == nil {
		m, ok := c.net.next(c.now)
		if !ok {
			break
		}
		var n *simNode
		if int(m.To) < len(c.nodes) {
			n = c.nodes[m.To]
		}
		if c.net.isCut(m.From, m.To) || n == nil || !n.up {
			c.net.dropped++
			if c.tracing {
				c.tracef("lost %v", m)
			}
			continue
		}
		c.net.delivered++
		c.stats.MaxInFlight = max(c.stats.MaxInFlight, len(c.net.q))
		if len(c.net.q) > maxInFlight {
			c.violate("liveness", "message storm: %d messages in flight (%s)", len(c.net.q), c.describe())
			return
		}
		if c.tracing {
			c.tracef("deliver %v", m)
		}
		n.core.Step(m)
		c.settle(n)
	}
	for _, n := range c.nodes[1:] {
		if c.err != nil {
			return
		}
		if n.up && len(n.pending) > 0 && n.pending[0].doneAt <= c.now {
			c.settle(n)
		}
		if n.up && n.phase == sub {
			n.core.Tick()
			c.settle(n)
		}
	}
	if !c.healed {
		for _, cl := range c.clients {
			if c.err == nil && cl.nextAt <= c.now && cl.state != waitingProposal && cl.state != waitingRead {
				c.act(cl)
			}
		}
	}
}

// settle carries out everything n's Core asks for and every disk write
// whose time has come, then checks the invariants.
func (c *cluster) settle(n *simNode) {
	c.stats.Events++
	for n.up && c.err == nil {
		if n.core.HasReady() {
			c.onReady(n, n.core.Ready())
			continue
		}
		if len(n.pending) > 0 && n.pending[0].doneAt <= c.now {
			c.complete(n)
			continue
		}
		break
	}
	if n.up && c.err == nil {
		c.checkNode(n)
	}
}

// onReady takes a Ready from n's Core: it updates the log mirror and the
// commit records, checking them, and queues the writes.
func (c *cluster) onReady(n *simNode, rd raft.Ready) {
	// The Core may reuse the backing array of its log after a truncation:
	// the write must keep the entries as they are now.
	rd.Entries = slices.Clone(rd.Entries)
	// Messages to one destination keep their order; across destinations
	// the Core's order depends on map iteration, so fix it.
	slices.SortStableFunc(rd.Messages, func(a, b raft.Message) int { return int(a.To) - int(b.To) })
	leader := n.core.Role() == raft.Leader
	if rd.Snapshot != nil {
		if leader {
			c.violate("leader append-only", "leader n%d of term %d installs a snapshot at %d", n.id, n.core.Term(), rd.Snapshot.Index)
			return
		}
		id := entryID{rd.Snapshot.Index, rd.Snapshot.Term}
		ch, ok := c.chk.chains[id]
		if !ok {
			c.violate("log matching", "n%d installs a snapshot at (index %d, term %d), an entry no log ever held", n.id, id.index, id.term)
			return
		}
		n.log.reset(id.index, id.term, ch)
	}
	if len(rd.Entries) > 0 {
		first := rd.Entries[0].Index
		if leader && first <= n.log.last() {
			c.violate("leader append-only", "leader n%d of term %d overwrites its log from index %d (last %d)", n.id, n.core.Term(), first, n.log.last())
			return
		}
		if first > n.log.last()+1 || first <= n.log.offset {
			c.violate("log matching", "n%d appends at index %d to a log spanning (%d, %d]", n.id, first, n.log.offset, n.log.last())
			return
		}
		n.log.truncate(first - 1)
		for i := range rd.Entries {
			c.appendMirror(n, &rd.Entries[i])
		}
	}
	if hs := rd.HardState; hs.Commit != n.commit {
		c.recordCommit(n, hs.Commit)
	}
	if c.err != nil {
		return
	}
	if c.tracing {
		c.tracef("n%d ready hs=%v ents=%d snap=%t msgs=%d apply=%d reads=%d", n.id, rd.HardState, len(rd.Entries), rd.Snapshot != nil, len(rd.Messages), len(rd.CommittedEntries), len(rd.ReadStates))
	}
	op := diskOp{kind: opReady, rd: rd, doneAt: max(c.now, n.lastDone)}
	if rd.MustSync || rd.Snapshot != nil {
		op.doneAt += c.diskLatency(n)
	}
	n.lastDone = op.doneAt
	switch {
	case c.opts.AckBeforePersist:
		c.send(n, rd.Messages)
		op.sent = true
	case c.opts.EarlyLeaderMessages && rd.MustSync && rd.HardState.Term == n.durable.Term:
		rest := rd.Messages[:0:0]
		for _, m := range rd.Messages {
			if m.Type == raft.MsgApp || m.Type == raft.MsgHeartbeat {
				c.send(n, []raft.Message{m})
			} else {
				rest = append(rest, m)
			}
		}
		op.rd.Messages = rest
	}
	n.pending = append(n.pending, op)
}

// apply restores a received snapshot and applies committed entries, in
// order and exactly once per index, checking state machine safety, then
// serves the reads that became possible.
func (c *cluster) apply(n *simNode, rd *raft.Ready) {
	if rd.Snapshot != nil {
		idx := rd.Snapshot.Index
		if err := n.sm.Restore(bytes.NewReader(rd.SnapshotData)); err != nil {
			c.violate("determinism", "n%d: state machine cannot restore a snapshot at index %d: %v", n.id, idx, err)
			return
		}
		c.checkSnapshotBytes(n, idx, rd.SnapshotData)
		n.applied = max(n.applied, idx)
		for _, cl := range c.clients {
			if cl.state == waitingProposal && cl.node == n.id && cl.index <= idx {
				delete(n.proposals, cl.index)
				c.finishUnknown(cl)
			}
		}
	}
	k := c.chk
	for i := range rd.CommittedEntries {
		e := &rd.CommittedEntries[i]
		if e.Index != n.applied+1 {
			c.violate("apply order", "n%d applies index %d after index %d", n.id, e.Index, n.applied)
			return
		}
		for uint64(len(k.applied)) <= e.Index {
			k.applied = append(k.applied, appliedEntry{})
			k.results = append(k.results, nil)
			k.hasResult = append(k.hasResult, false)
		}
		ae := appliedEntry{term: e.Term, typ: e.Type, data: hashBytes(e.Data), set: true}
		if old := k.applied[e.Index]; !old.set {
			k.applied[e.Index] = ae
		} else if old != ae {
			c.violate("state machine safety", "n%d applies (index %d, term %d) where another node applied (index %d, term %d) with other data", n.id, e.Index, e.Term, e.Index, old.term)
			return
		}
		var res any
		if e.Type == raft.EntryNormal {
			res = n.sm.Apply(*e)
			if !k.hasResult[e.Index] {
				k.results[e.Index], k.hasResult[e.Index] = res, true
			} else if !resultsEqual(k.results[e.Index], res) {
				c.violate("determinism", "Apply of index %d returned %v on n%d but %v on another replica", e.Index, res, n.id, k.results[e.Index])
				return
			}
		}
		n.applied = e.Index
		if cl := n.proposals[e.Index]; cl != nil {
			delete(n.proposals, e.Index)
			c.proposalApplied(cl, e, res)
		}
	}
	for _, rs := range rd.ReadStates {
		if cl := n.reads[rs.Context]; cl != nil {
			c.readIndexKnown(n, cl, rs.Index)
		}
	}
	c.serveReads(n)
}

// nextStamp returns the next logical timestamp for the history.
func (c *cluster) nextStamp() int64 {
	c.stamp++
	return c.stamp
}
