package raft

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
)

// Role is a node's part in the protocol.
type Role uint8

const (
	// Follower: answers leaders and candidates.
	Follower Role = iota
	// PreCandidate: asking whether it could win before bumping its term.
	PreCandidate
	// Candidate: campaigning in a new term.
	Candidate
	// Leader: accepts proposals and replicates the log.
	Leader
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case PreCandidate:
		return "pre-candidate"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Errors returned by the Core's request methods.
var (
	// ErrProposalDropped: the proposal was not appended (for example
	// because a leadership transfer is under way); it surely did not commit.
	ErrProposalDropped = errors.New("raft: proposal dropped")
	// ErrConfChangePending: a membership change is already in progress.
	ErrConfChangePending = errors.New("raft: a membership change is already in progress")
	// errLeaderNotReady: a new leader has not yet committed an entry of
	// its term, so it accepts no membership change yet; retry shortly.
	errLeaderNotReady = errors.New("raft: new leader has not yet committed an entry of its term")
)

// Ready is a batch of effects the Core asks its driver to carry out, in
// this order:
//
//  1. persist Snapshot (if set), then HardState and Entries, in one
//     durable batch (Storage.SaveSnapshot, then Storage.Save);
//  2. send Messages (only after step 1 is durable: they may acknowledge
//     what it holds);
//  3. restore the state machine from Snapshot, if set, then apply
//     CommittedEntries in order;
//  4. call Advance with this Ready.
//
// ReadStates list reads that became safe: once the state machine has
// applied up to ReadState.Index, a read started with that context is
// linearizable.
//
// CommittedEntries are always durable on this node already (written by a
// Ready whose Advance came earlier), so a driver may apply them without
// waiting for this Ready's own write. That allows a pipelined driver, as
// Node is: it may hand Entries to a background writer, keep stepping
// messages and calling Ready (each Ready holds only what is new since the
// previous one), and call Advance for each Ready, in order, once its write
// is durable. Messages that acknowledge entries or reveal a new term or
// vote must still wait for the write of their Ready and of every Ready
// before it; a leader's MsgApp and MsgHeartbeat may leave at once when its
// term is already durable (the Core counts the leader's own entries toward
// a commit only after Advance).
type Ready struct {
	HardState HardState
	// MustSync is set when the term, vote, Entries or Snapshot changed:
	// the driver must make HardState and Entries durable before sending
	// Messages. A change of the commit index alone does not set it: the
	// commit index is written with the next durable batch (it is only a
	// restart hint; safety never depends on it), which saves an fsync per
	// commit round.
	MustSync         bool
	Entries          []Entry
	Snapshot         *SnapshotMeta
	SnapshotData     []byte
	Messages         []Message
	CommittedEntries []Entry
	ReadStates       []ReadState
}

// ReadState says a read with this Context is linearizable once the state
// machine has applied Index.
type ReadState struct {
	Index   uint64
	Context uint64
}

// Core is the deterministic Raft state machine. It does no I/O, starts no
// goroutine and never reads the clock: it changes only when its methods
// are called, and reports its effects through Ready. Its randomness comes
// from the source given to NewCore, so a seeded run replays exactly.
//
// Core is not safe for concurrent use; Node is the goroutine-safe wrapper.
type Core struct {
	id     NodeID
	cfg    Config
	rand   *rand.Rand
	logger *slog.Logger

	term uint64
	vote NodeID
	role Role
	lead NodeID
	log  *raftLog

	confs confHistory
	// prs holds the leader's view of each other member, and of itself.
	prs   map[NodeID]*progress
	votes map[NodeID]bool

	// electionElapsed counts ticks since the last reset: for followers and
	// candidates since the last heard-from leader or election start, for
	// leaders since the last check-quorum round.
	electionElapsed  int
	heartbeatElapsed int
	// ticks counts every Tick since the Core was created (for leases).
	ticks uint64
	// randomizedTimeout is in [ElectionTicks, 2*ElectionTicks).
	randomizedTimeout int

	// campaignCtx is the Context of this campaign's vote requests.
	campaignCtx uint64
	// leadTransferee is the target of a leadership transfer in progress.
	leadTransferee NodeID
	// uncommitted is the data bytes of the normal entries this leader
	// appended after uncommittedMark that are not yet both committed and
	// durable here (Config.MaxUncommittedBytes). uncommittedMark starts at
	// the leader's no-op entry and follows min(committed, stable).
	uncommitted     int
	uncommittedMark uint64
	// pendingConfIndex is the index of the latest config entry the leader
	// appended; a new change waits until it commits.
	pendingConfIndex uint64
	// snap is the latest snapshot known durable in Storage.
	snap SnapshotMeta
	// pendingSnap is a received snapshot to hand out in the next Ready.
	pendingSnap     *SnapshotMeta
	pendingSnapData []byte

	reads readIndexState

	msgs       []Message
	readStates []ReadState
	prevHS     HardState

	tick func()
	step func(m Message)

	// mutations are deliberate bugs switched on only by tests of the
	// simulator (see testing/rafttest); zero in production.
	mutations Mutations
}

// Mutations are deliberate protocol bugs for testing that a test suite
// catches them. Production code never sets them.
type Mutations struct {
	// VoteWithoutLogCheck grants votes without the up-to-date check.
	VoteWithoutLogCheck bool
	// CommitPreviousTerm counts replicas for entries of earlier terms.
	CommitPreviousTerm bool
	// MatchFromNext sets matchIndex from nextIndex-1 after an ack.
	MatchFromNext bool
	// NoTruncate makes followers keep a conflicting suffix.
	NoTruncate bool
}

// NewCore returns a Core for cfg starting from the durable state st (as
// returned by Storage.Load). rng supplies all randomness; pass a seeded
// source for reproducible runs.
//
// If st is empty and cfg.Peers is set, the Core bootstraps a new cluster:
// its first Ready persists a configuration entry at index 1, term 1, that
// every initial member creates identically.
func NewCore(cfg Config, st State, rng *rand.Rand) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, errors.New("raft: NewCore needs a random source")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Core{
		id:     cfg.ID,
		cfg:    cfg,
		rand:   rng,
		logger: logger.With("node", uint64(cfg.ID)),
		log:    newRaftLog(st),
		snap:   st.Snapshot,
	}
	c.term, c.vote = st.HardState.Term, st.HardState.Vote
	c.prevHS = c.hardState()
	if err := c.loadConfigs(st); err != nil {
		return nil, err
	}
	if c.log.lastIndex() == 0 && st.Snapshot.Index == 0 && st.HardState.IsZero() && len(cfg.Peers) > 0 {
		c.bootstrap(Configuration{Servers: slices.Clone(cfg.Peers)})
	}
	c.becomeFollower(c.term, None)
	return c, nil
}

// loadConfigs rebuilds the configuration history from the snapshot and the
// config entries in the log.
func (c *Core) loadConfigs(st State) error {
	c.confs.reset(st.Snapshot.Index, st.Snapshot.Config.Clone())
	for i := range st.Entries {
		e := &st.Entries[i]
		if e.Type != EntryConfig {
			continue
		}
		conf, err := DecodeConfiguration(e.Data)
		if err != nil {
			return fmt.Errorf("raft: config entry at index %d: %w", e.Index, err)
		}
		if e.Index <= st.Snapshot.Index {
			// The snapshot already reflects it; keep history ordered.
			continue
		}
		c.confs.push(e.Index, conf)
	}
	return nil
}

func (c *Core) bootstrap(conf Configuration) {
	e := Entry{Index: 1, Term: 1, Type: EntryConfig, Data: EncodeConfiguration(conf)}
	c.log.append(e)
	c.log.unstable = 1
	c.term = 1
	c.log.committed = 1
	c.confs.push(1, conf)
}

// ID returns the node's ID.
func (c *Core) ID() NodeID { return c.id }

// Term returns the current term.
func (c *Core) Term() uint64 { return c.term }

// Role returns the current role.
func (c *Core) Role() Role { return c.role }

// Leader returns the known leader, or None.
func (c *Core) Leader() NodeID { return c.lead }

// Config returns the configuration in force (the latest in the log).
func (c *Core) Config() Configuration { return c.confs.latest().conf }

func (c *Core) config() *Configuration { return &c.confs.entries[len(c.confs.entries)-1].conf }

func (c *Core) hardState() HardState {
	return HardState{Term: c.term, Vote: c.vote, Commit: c.log.committed}
}

// promotable reports whether this node may campaign: it is a voter in the
// configuration in force.
func (c *Core) promotable() bool { return c.config().IsVoter(c.id) }

// Tick advances the logical clock by one tick.
func (c *Core) Tick() { c.tick() }

func (c *Core) send(m Message) {
	m.From = c.id
	if m.Term == 0 {
		m.Term = c.term
	}
	c.msgs = appendMsg(c.msgs, m)
}

// appendMsg appends m to msgs, except that an acceptance (a MsgAppResp
// that does not reject) is folded into the last message to the same peer
// when that is an acceptance of the same term: acceptances are cumulative,
// so the one with the higher index says all the other does. A follower
// stepping a burst of pipelined appends thus answers them with one message
// rather than one per append. Per-peer order, the only order a Transport
// keeps, is unchanged: the folded message is the last one to that peer.
func appendMsg(msgs []Message, m Message) []Message {
	if m.Type == MsgAppResp && !m.Reject {
		for i := len(msgs) - 1; i >= 0; i-- {
			p := &msgs[i]
			if p.To != m.To {
				continue
			}
			if p.Type == MsgAppResp && !p.Reject && p.From == m.From && p.Term == m.Term {
				p.Index = max(p.Index, m.Index)
				return msgs
			}
			break
		}
	}
	return append(msgs, m)
}

func (c *Core) resetTimers() {
	c.electionElapsed, c.heartbeatElapsed = 0, 0
	c.randomizedTimeout = c.cfg.ElectionTicks + c.rand.IntN(c.cfg.ElectionTicks)
}

func (c *Core) reset(term uint64) {
	c.failReads()
	if c.term != term {
		c.term, c.vote = term, None
	}
	c.lead = None
	c.resetTimers()
	c.votes = nil
	c.leadTransferee = None
	c.prs = nil
}

func (c *Core) becomeFollower(term uint64, lead NodeID) {
	c.reset(term)
	c.role, c.lead = Follower, lead
	c.step, c.tick = c.stepFollower, c.tickElection
}

// Step feeds a message from another node into the Core. Messages that make
// no sense (unknown type, from self, stale) are dropped.
func (c *Core) Step(m Message) {
	if m.Type == 0 || m.Type >= msgTypeEnd || m.From == None || m.From == c.id || (m.To != c.id && m.To != None) {
		c.logger.Debug("dropping malformed message", "msg", m.String())
		return
	}
	switch {
	case m.Term > c.term:
		if !c.acceptHigherTerm(m) {
			return
		}
	case m.Term < c.term:
		c.handleStaleTerm(m)
		return
	}
	switch m.Type {
	case MsgVote, MsgPreVote:
		c.handleVoteRequest(m)
	default:
		c.step(m)
	}
}

// acceptHigherTerm decides what a message from a higher term does to us.
// It reports whether the message should be processed further.
func (c *Core) acceptHigherTerm(m Message) bool {
	switch m.Type {
	case MsgVote, MsgPreVote:
		force := m.Context == contextTransfer
		inLease := c.cfg.CheckQuorum && c.lead != None && c.electionElapsed < c.cfg.ElectionTicks
		// With leases, a node that just (re)started may have acked a
		// leader's heartbeat before it crashed: it votes for nobody until
		// that lease must have expired.
		inLease = inLease || (c.cfg.LeaseRead && c.ticks < uint64(c.cfg.ElectionTicks))
		if !force && inLease {
			// We heard from a leader recently: ignore a disruptive
			// candidate (dissertation section 4.2.3).
			return false
		}
		if m.Type == MsgPreVote && c.lead != None && c.electionElapsed < c.cfg.ElectionTicks {
			// Pre-vote is granted only by voters that have not heard from
			// a leader for an election timeout (dissertation section
			// 9.6), so a rejoining node with an up-to-date log cannot
			// depose a healthy leader even without check-quorum.
			c.send(Message{To: m.From, Type: MsgPreVoteResp, Reject: true})
			return false
		}
		if m.Type == MsgPreVote {
			return true // a pre-vote never changes our term
		}
		c.becomeFollower(m.Term, None)
		return true
	case MsgPreVoteResp:
		if !m.Reject {
			return true // granted pre-votes carry the term we asked for
		}
	}
	lead := None
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgSnap, MsgTimeoutNow:
		lead = m.From
	}
	c.becomeFollower(m.Term, lead)
	return true
}

// handleStaleTerm answers a message from an older term where that helps the
// sender catch up, and otherwise drops it.
func (c *Core) handleStaleTerm(m Message) {
	switch m.Type {
	case MsgApp, MsgHeartbeat:
		// A deposed leader: tell it the current term so it steps down. This
		// matters when check-quorum or pre-vote keep it from learning the
		// term through votes.
		c.send(Message{To: m.From, Type: MsgAppResp, Reject: true, Index: m.Index, RejectHint: c.log.lastIndex() + 1})
	case MsgPreVote:
		c.send(Message{To: m.From, Type: MsgPreVoteResp, Reject: true})
	}
}

// HasReady reports whether Ready would return anything.
func (c *Core) HasReady() bool {
	return len(c.msgs) > 0 || c.hardState() != c.prevHS || len(c.log.unstableEntries()) > 0 ||
		c.pendingSnap != nil || len(c.readStates) > 0 || c.log.applied < c.log.applyLimit() || c.reads.needBcast
}

// Ready returns the effects accumulated since the last call. The caller
// must carry them out as Ready's documentation says and then call Advance.
// Calling Ready again before Advance returns only effects produced since.
func (c *Core) Ready() Ready {
	c.flushReads()
	rd := Ready{
		Entries:          c.log.unstableEntries(),
		Messages:         c.msgs,
		CommittedEntries: c.log.nextCommitted(c.cfg.MaxApplyBatchBytes),
		ReadStates:       c.readStates,
	}
	rd.HardState = c.hardState()
	if rd.HardState != c.prevHS {
		rd.MustSync = rd.HardState.Term != c.prevHS.Term || rd.HardState.Vote != c.prevHS.Vote
		c.prevHS = rd.HardState
	}
	if len(rd.Entries) > 0 {
		rd.MustSync = true
		c.log.unstable = c.log.lastIndex() + 1
	}
	if c.pendingSnap != nil {
		rd.Snapshot, rd.SnapshotData = c.pendingSnap, c.pendingSnapData
		rd.MustSync = true
		c.pendingSnap, c.pendingSnapData = nil, nil
	}
	if n := len(rd.CommittedEntries); n > 0 {
		c.log.applied = rd.CommittedEntries[n-1].Index
	}
	c.msgs, c.readStates = nil, nil
	return rd
}

// Advance tells the Core that rd has been carried out: its entries are
// durable.
func (c *Core) Advance(rd Ready) {
	if rd.Snapshot != nil && rd.Snapshot.Index > c.snap.Index {
		c.snap = *rd.Snapshot
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		c.log.stableTo(last.Index, last.Term)
		if c.role == Leader {
			pr := c.prs[c.id]
			if pr != nil && pr.maybeUpdate(c.log.stable) {
				if c.maybeCommit() {
					c.bcastEntries()
				}
			}
			c.releaseUncommitted()
		}
	}
}

// admit returns how many of cmds, from the first, a leader may append
// under Config.MaxUncommittedBytes: while nothing is pending, at least one.
func (c *Core) admit(cmds [][]byte) int {
	limit := c.cfg.MaxUncommittedBytes
	if limit <= 0 {
		return len(cmds)
	}
	pending := c.uncommitted
	for i, cmd := range cmds {
		if pending > 0 && pending+len(cmd) > limit {
			return i
		}
		pending += len(cmd)
	}
	return len(cmds)
}

// releaseUncommitted stops counting the leader's entries that are now both
// committed and durable on the leader. A leader whose own disk stalls may
// see its followers commit without it; its entries still wait in its write
// queue, so they still count.
func (c *Core) releaseUncommitted() {
	to := min(c.log.committed, c.log.stable)
	if to <= c.uncommittedMark {
		return
	}
	for _, e := range c.log.slice(c.uncommittedMark+1, to+1, 0) {
		if e.Type == EntryNormal {
			c.uncommitted -= len(e.Data)
		}
	}
	c.uncommittedMark = to
}

// Propose appends commands to the log. It returns the index of the first
// one; the rest follow consecutively. Only a leader accepts proposals: on
// any other node it returns a *NotLeaderError. It returns
// ErrProposalDropped, appending nothing, if the leader's entries not yet
// committed would exceed Config.MaxUncommittedBytes.
func (c *Core) Propose(cmds ...[]byte) (first uint64, err error) {
	if c.role != Leader {
		return 0, &NotLeaderError{Leader: c.lead}
	}
	if c.leadTransferee != None {
		return 0, ErrProposalDropped
	}
	if c.admit(cmds) < len(cmds) {
		return 0, ErrProposalDropped
	}
	for _, cmd := range cmds {
		c.uncommitted += len(cmd)
	}
	first = c.log.lastIndex() + 1
	for i, cmd := range cmds {
		c.log.append(Entry{Index: first + uint64(i), Term: c.term, Type: EntryNormal, Data: cmd})
	}
	c.bcastAppend()
	return first, nil
}

// ProposeConfChange appends a single-server membership change. It fails
// with ErrConfChangePending while an earlier change is uncommitted, with a
// retryable error before the leader has committed an entry of its own term
// (the fix for the single-server change bug found after the dissertation),
// and with a plain error if the change makes no sense.
func (c *Core) ProposeConfChange(cc ConfChange) (index uint64, err error) {
	if c.role != Leader {
		return 0, &NotLeaderError{Leader: c.lead}
	}
	if c.leadTransferee != None {
		return 0, ErrProposalDropped
	}
	if !c.committedInTerm() {
		return 0, errLeaderNotReady
	}
	if c.pendingConfIndex > c.log.committed {
		return 0, ErrConfChangePending
	}
	next, err := c.config().apply(cc)
	if err != nil {
		return 0, err
	}
	index = c.log.lastIndex() + 1
	c.appendConfig(Entry{Index: index, Term: c.term, Type: EntryConfig, Data: EncodeConfiguration(next)}, next)
	c.bcastAppend()
	return index, nil
}

// committedInTerm reports whether an entry of the current term is committed.
func (c *Core) committedInTerm() bool {
	t, _ := c.log.term(c.log.committed)
	return t == c.term
}

// appendConfig appends a config entry on the leader and puts it in force.
func (c *Core) appendConfig(e Entry, conf Configuration) {
	c.log.append(e)
	c.pendingConfIndex = e.Index
	c.setConfig(e.Index, conf)
}

// setConfig puts conf in force from index on.
func (c *Core) setConfig(index uint64, conf Configuration) {
	c.confs.push(index, conf)
	c.configChanged()
}

// configChanged brings leader progress in line with the configuration in
// force.
func (c *Core) configChanged() {
	if c.role != Leader {
		return
	}
	conf := c.config()
	for _, s := range conf.Servers {
		if _, ok := c.prs[s.ID]; !ok {
			c.prs[s.ID] = c.newProgress()
		}
	}
	for id := range c.prs {
		if _, ok := conf.Server(id); !ok && id != c.id {
			delete(c.prs, id)
		}
	}
	if c.leadTransferee != None {
		if _, ok := conf.Server(c.leadTransferee); !ok {
			c.leadTransferee = None
		}
	}
	// A smaller quorum may commit more right away.
	if c.maybeCommit() {
		c.bcastAppend()
	}
}

func (c *Core) newProgress() *progress {
	return &progress{next: c.log.lastIndex() + 1, inflight: newInflights(c.cfg.MaxInflightMsgs, c.cfg.MaxInflightBytes)}
}

// SnapshotMetaAt returns the metadata for a snapshot of the state machine
// after applying index: the term of that entry and the configuration in
// force then. index must be applied and still in the log.
func (c *Core) SnapshotMetaAt(index uint64) (SnapshotMeta, error) {
	if index > c.log.applied {
		return SnapshotMeta{}, fmt.Errorf("raft: snapshot index %d is beyond applied index %d", index, c.log.applied)
	}
	t, ok := c.log.term(index)
	if !ok {
		return SnapshotMeta{}, fmt.Errorf("raft: snapshot index %d is no longer in the log (first index %d): %w", index, c.log.firstIndex(), ErrCompacted)
	}
	return SnapshotMeta{Index: index, Term: t, Config: c.confs.at(index).conf.Clone()}, nil
}

// SnapshotSaved tells the Core a snapshot is durable in Storage, and lets it
// drop log entries up to compactTo from memory (compactTo <= meta.Index;
// keep a tail for lagging followers by passing less).
func (c *Core) SnapshotSaved(meta SnapshotMeta, compactTo uint64) error {
	if meta.Index > c.snap.Index {
		c.snap = meta
	}
	compactTo = min(compactTo, c.snap.Index)
	if err := c.log.compact(compactTo); err != nil {
		return err
	}
	c.confs.compact(c.log.offset)
	return nil
}

// LastSnapshot returns the latest snapshot the Core knows to be durable.
func (c *Core) LastSnapshot() SnapshotMeta { return c.snap }

// Status reports the node's state.
func (c *Core) Status() Status {
	s := Status{
		ID:         c.id,
		Role:       c.role,
		Term:       c.term,
		Vote:       c.vote,
		Leader:     c.lead,
		Commit:     c.log.committed,
		Applied:    c.log.applied,
		FirstIndex: c.log.firstIndex(),
		LastIndex:  c.log.lastIndex(),
		Snapshot:   c.snap.Index,
		Config:     c.config().Clone(),
	}
	if c.role == Leader {
		s.Progress = make(map[NodeID]FollowerProgress, len(c.prs))
		for id, pr := range c.prs {
			s.Progress[id] = FollowerProgress{Match: pr.match, Next: pr.next, State: pr.state, Inflight: pr.inflight.count, InflightBytes: pr.inflight.bytes, RecentActive: pr.recentActive}
		}
	}
	return s
}

// SetMutations switches on deliberate protocol bugs. It exists so that
// testing/rafttest can prove it detects them; never call it elsewhere.
func (c *Core) SetMutations(m Mutations) { c.mutations = m }

// restoreSnapshot installs a snapshot received from the leader. It reports
// whether the log was replaced.
func (c *Core) restoreSnapshot(meta SnapshotMeta, data []byte) bool {
	if meta.Index <= c.log.committed {
		return false
	}
	if c.log.matchTerm(meta.Index, meta.Term) {
		// We already hold the entries: just learn they are committed.
		c.log.commitTo(meta.Index)
		return false
	}
	c.logger.Info("installing snapshot", "index", meta.Index, "term", meta.Term)
	c.log.restore(meta.Index, meta.Term)
	c.confs.reset(meta.Index, meta.Config.Clone())
	m := meta
	m.Config = meta.Config.Clone()
	c.pendingSnap, c.pendingSnapData = &m, data
	return true
}
