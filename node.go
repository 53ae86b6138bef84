package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Node runs one member of a Raft cluster: a goroutine that drives the Core
// with a ticker, messages from the Transport and requests from callers; a
// goroutine that applies committed entries to the StateMachine; and the
// Storage and Transport plugins. All methods are safe for concurrent use.
//
// The Core is guarded by coreMu. The loop goroutine takes it for each
// event it handles; while the loop is idle, a proposer or (with an
// InlineDeliverer transport) a goroutine delivering a message may take it
// instead and do the work itself, sparing a goroutine hand-off. Nobody
// else ever waits for coreMu but the loop, so those goroutines never block
// on a busy node: when TryLock fails they queue their work for the loop.
type Node struct {
	cfg    Config
	id     NodeID
	core   *Core // guarded by coreMu
	st     Storage
	tr     Transport
	app    *applier
	logger *slog.Logger

	recvc chan Message
	propc chan *proposal
	reqc  chan func()
	obsc  chan struct{} // capacity 1: observations are queued for cfg.Observer

	// coreMu guards the Core and every field marked "loop only" (the
	// goroutine holding it acts as the loop). See the type's comment.
	coreMu sync.Mutex
	halted bool // set under coreMu once the node must stop; nothing steps the Core or carries out its effects after (a do request still runs, and its effects are dropped)
	// applyQueued is set (under coreMu) when committed entries or reads
	// were queued for the applier; settle then applies them or wakes it.
	applyQueued bool
	// obsQueue holds observations for cfg.Observer, which is only ever
	// called on the loop goroutine, in order, without coreMu held.
	obsQueue []Observation

	stopOnce   sync.Once
	stopc      chan struct{} // closed to ask the loop to stop
	loopExit   chan struct{} // closed when the loop takes no more requests
	donec      chan struct{} // closed when everything is released
	stopCalled atomic.Bool
	wg         sync.WaitGroup // background goroutines other than the loop

	dropped atomic.Uint64
	queued  atomic.Int64 // messages delivered to recvc and not yet stepped
	readID  atomic.Uint64

	// Counted for tests: messages and proposals handled inline.
	inlineSteps, inlineProposals atomic.Uint64

	readsMu sync.Mutex
	reads   map[uint64]chan error

	mu        sync.Mutex // guards the fields below
	obs       Observation
	changed   chan struct{} // closed and replaced on every observation change
	fatal     error
	final     Status
	confIndex uint64

	// durableTerm is the term of the last hard state written to Storage.
	durableTerm uint64
	persist     *persister
	inflight    int          // jobs queued to persist and not yet reported back; loop only
	persisted   []persistJob // scratch for persistDone; loop only

	propBatch []*proposal
	cmdBatch  [][]byte
	earlyMsgs []Message // scratch for sendBeforeSave; loop only

	snapMu  sync.Mutex
	senders map[NodeID]*snapSender // outgoing snapshot transfers; guarded by snapMu
	recv    *snapReceiver          // incoming snapshot; loop only
}

const (
	inboxSize     = 4096
	proposalQueue = 4096
	maxPropBatch  = 1024
)

// NewNode starts a node. It loads st, restores sm from the latest snapshot
// if there is one, and starts the transport. If st is empty and cfg.Peers is
// set, the node bootstraps a new cluster with that configuration; if both
// are empty, it waits to be added to an existing cluster.
//
// The node owns tr from now on (Stop closes it); st stays open so the
// caller can inspect or reuse it after Stop.
func NewNode(cfg Config, sm StateMachine, st Storage, tr Transport) (*Node, error) {
	if sm == nil || st == nil || tr == nil {
		return nil, errors.New("raft: NewNode needs a StateMachine, a Storage and a Transport")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	state, err := st.Load()
	if err != nil {
		return nil, fmt.Errorf("raft: loading storage: %w", err)
	}
	seed := maphash.Comparable(maphash.MakeSeed(), time.Now().UnixNano())
	core, err := NewCore(cfg, state, rand.New(rand.NewPCG(seed, uint64(cfg.ID))))
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg:      cfg,
		id:       cfg.ID,
		core:     core,
		st:       st,
		tr:       tr,
		logger:   logger.With("node", uint64(cfg.ID)),
		recvc:    make(chan Message, inboxSize),
		propc:    make(chan *proposal, proposalQueue),
		reqc:     make(chan func()),
		obsc:     make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		loopExit: make(chan struct{}),
		donec:    make(chan struct{}),
		reads:    make(map[uint64]chan error),
		changed:  make(chan struct{}),
		senders:  make(map[NodeID]*snapSender),
	}
	if state.Snapshot.Index > 0 {
		if err := restoreFromStorage(sm, st, state.Snapshot); err != nil {
			return nil, err
		}
	}
	n.durableTerm = state.HardState.Term
	n.app = newApplier(n, sm, state.Snapshot.Index)
	n.obs = Observation{ID: n.id, Role: core.Role(), Term: core.Term(), Leader: core.Leader()}
	n.confIndex = core.confs.latest().index
	tr.SetPeers(core.Config().Servers)
	// The persister exists before the transport starts: an
	// InlineDeliverer may step a message, and write, at once.
	n.persist = newPersister(st, n.send, n.logger.Warn)
	start := func() error { return tr.Start(n.deliver) }
	if it, ok := tr.(InlineDeliverer); ok {
		start = func() error { return it.StartInline(n.deliverInline) }
	}
	if err := start(); err != nil {
		n.persist.stop()
		return nil, fmt.Errorf("raft: starting transport: %w", err)
	}
	go n.app.run()
	go n.app.runCanceller(n.cfg.TickInterval)
	go n.run()
	return n, nil
}

func restoreFromStorage(sm StateMachine, st Storage, want SnapshotMeta) error {
	meta, rc, err := st.Snapshot()
	if err != nil {
		return fmt.Errorf("raft: opening snapshot at index %d: %w", want.Index, err)
	}
	defer rc.Close()
	if meta.Index != want.Index {
		return fmt.Errorf("raft: storage snapshot index %d does not match loaded state %d", meta.Index, want.Index)
	}
	if err := sm.Restore(rc); err != nil {
		return fmt.Errorf("raft: state machine failed to restore snapshot at index %d: %w", meta.Index, err)
	}
	return nil
}

// deliver is the Transport's entry point. It never blocks: when the inbox
// is full the message is dropped (Raft retries).
func (n *Node) deliver(m Message) {
	n.queued.Add(1)
	select {
	case n.recvc <- m:
	default:
		n.queued.Add(-1)
		n.dropped.Add(1)
	}
}

// deliverInline is deliver for an InlineDeliverer transport: when the node
// is idle and m is worth handling at once (see handleNow), it steps m and
// carries out the effects on the calling goroutine. Messages queued for
// the loop stay there: the loop, woken when they were queued, steps them
// in order (one it has taken but not yet stepped would otherwise be
// overtaken). Snapshot chunks, whose handling writes to Storage, always go
// to the loop.
func (n *Node) deliverInline(m Message, more bool) {
	if m.Type != MsgSnap && n.coreMu.TryLock() {
		if !n.halted && n.handleNow(m, more) {
			n.inlineSteps.Add(1)
			n.step(m)
			n.settle(false)
			return
		}
		n.coreMu.Unlock()
	}
	n.deliver(m)
}

// handleNow reports whether m should be handled inline rather than by the
// loop (coreMu held).
//
// A leader handles everything at once: its messages are mostly
// acknowledgements, cheap to step, and each can commit entries and release
// the next append. Acknowledgements are cumulative, so one stepped ahead
// of others still queued does no harm.
//
// A follower keeps its messages in order: stepped ahead of queued appends,
// an append would be rejected and the leader would probe again. So it
// handles m only if nothing is queued or about to follow (more), and an
// append only if its commit index covers the follower's whole log, that
// is, if the leader had nothing else in flight. Under load appends are
// pipelined and the loop does better: it steps every append queued behind
// the first and writes them with one Save. (Followers handling every
// append as it was read cost the TCP benchmark's 64 and 256 proposers a
// quarter of their throughput.)
func (n *Node) handleNow(m Message, more bool) bool {
	if n.core.Role() == Leader {
		return true
	}
	return !more && n.queued.Load() == 0 && (m.Type != MsgApp || m.Commit >= n.core.log.lastIndex())
}

func (n *Node) run() {
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			if n.lock() {
				n.core.Tick()
			}
		case m := <-n.recvc:
			if n.lock() {
				n.step(m)
				n.queued.Add(-1)
				n.stepQueued()
			} else {
				n.queued.Add(-1)
			}
		case p := <-n.propc:
			if n.lock() {
				n.handleProposals(p)
			} else {
				p.finish(nil, ErrStopped)
			}
		case f := <-n.reqc:
			n.lock()
			f() // even when halted: its caller waits for it
		case <-n.persist.ready:
			if n.lock() && !n.persistDone() {
				n.halt()
			}
		case <-n.obsc:
			n.lock()
		case <-n.stopc:
			n.lock()
			n.halt()
		}
		if !n.settle(true) {
			n.shutdown()
			return
		}
	}
}

// lock takes coreMu for the loop and reports whether the node may go on.
func (n *Node) lock() bool {
	n.coreMu.Lock()
	return !n.halted
}

// halt marks the node as stopping (coreMu held): nothing steps the Core
// any more, and the loop shuts down at its next turn.
func (n *Node) halt() {
	n.halted = true
	n.stopOnce.Do(func() { close(n.stopc) })
}

// settle carries out the effects of what was just done to the Core and
// releases coreMu. On the loop (onLoop) it also calls cfg.Observer with
// the queued observations; elsewhere it wakes the loop to do so. It
// returns false once the node has halted.
func (n *Node) settle(onLoop bool) bool {
	if !n.halted {
		if n.processReady() {
			n.observe()
		} else {
			n.halt()
		}
	}
	halted := n.halted
	applyQueued := n.applyQueued
	n.applyQueued = false
	var obs []Observation
	if len(n.obsQueue) > 0 {
		if onLoop {
			obs = n.obsQueue
			n.obsQueue = nil
		} else {
			select {
			case n.obsc <- struct{}{}:
			default:
			}
		}
	}
	n.coreMu.Unlock()
	if applyQueued {
		if onLoop {
			n.app.signal() // the loop never waits for the StateMachine
		} else {
			n.app.applyNow()
		}
	}
	for _, o := range obs {
		n.cfg.Observer(o)
	}
	return !halted
}

// stepQueued steps every message queued for the loop.
func (n *Node) stepQueued() {
	for range inboxSize {
		select {
		case m := <-n.recvc:
			n.step(m)
			n.queued.Add(-1)
			continue
		default:
		}
		break
	}
}

// step routes an incoming message: snapshot chunks and their
// acknowledgements are the runtime's business, everything else the Core's.
func (n *Node) step(m Message) {
	switch m.Type {
	case MsgSnap:
		n.handleSnapshotChunk(m)
	case MsgSnapAck:
		n.routeSnapAck(m)
	default:
		n.core.Step(m)
	}
}

// processReady carries out the Core's effects. It returns false if the node
// must stop (storage failed).
//
// Writes go to the persister, so the loop keeps stepping acknowledgements
// and proposals while the disk works; its group commit keeps batches as
// large as a synchronous write would. Committed entries are durable here
// already (see Ready), so they go to the applier at once, and so do a
// leader's appends and heartbeats when its term is durable. Every other
// message waits behind the writes queued before it.
func (n *Node) processReady() bool {
	for n.core.HasReady() {
		rd := n.core.Ready()
		switch {
		case rd.Snapshot != nil:
			if !n.writeSnapshotReady(rd) {
				return false
			}
			continue
		case !rd.MustSync && n.inflight == 0:
			n.send(rd.Messages)
		default:
			msgs := rd.Messages
			if rd.HardState.Term == n.durableTerm {
				msgs = n.sendBeforeSave(msgs)
			}
			if n.inflight == 0 && n.persist.fast() {
				// Storage is quick: write here, sparing two handoffs.
				if err := n.persist.save(rd.HardState, rd.Entries); err != nil {
					n.setFatal(fmt.Errorf("raft: persisting log: %w", err))
					return false
				}
				n.durableTerm = rd.HardState.Term
				n.send(msgs)
				break
			}
			n.pushApply(rd)
			if rd.MustSync || len(msgs) > 0 {
				n.persist.submit(persistJob{rd: rd, sync: rd.MustSync, msgs: msgs})
				n.inflight++
				continue // Advance once written
			}
			n.core.Advance(rd) // nothing to write or to hold back
			continue
		}
		n.pushApply(rd)
		n.core.Advance(rd)
	}
	return true
}

// pushApply hands committed entries and reads that became safe to the
// applier.
func (n *Node) pushApply(rd Ready) {
	if len(rd.CommittedEntries) > 0 || len(rd.ReadStates) > 0 {
		n.app.enqueue(applyTask{entries: rd.CommittedEntries, reads: n.readWaits(rd.ReadStates)})
		n.applyQueued = true // settle applies it or wakes the applier
	}
}

// persistDone takes the persister's finished jobs and tells the Core their
// writes are durable. It returns false if a write failed.
func (n *Node) persistDone() bool {
	jobs, err := n.persist.results(n.persisted[:0])
	for _, j := range jobs {
		n.inflight--
		if j.compactTo > 0 {
			continue
		}
		if j.sync {
			n.durableTerm = j.rd.HardState.Term
		}
		n.core.Advance(j.rd)
	}
	clear(jobs)
	n.persisted = jobs[:0]
	if err != nil {
		n.setFatal(fmt.Errorf("raft: persisting log: %w", err))
		return false
	}
	return true
}

// writeSnapshotReady carries out a Ready that installs a snapshot received
// from the leader. This is rare, so it is done synchronously once every
// earlier write has finished.
func (n *Node) writeSnapshotReady(rd Ready) bool {
	// Poll as well as wait: when this runs off the loop, the loop may
	// take the persister's signal and then wait for coreMu.
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for n.inflight > 0 {
		if !n.persistDone() {
			return false
		}
		if n.inflight == 0 {
			break
		}
		select {
		case <-n.persist.ready:
		case <-poll.C:
		case <-n.stopc:
			return false
		}
	}
	if err := n.st.SaveSnapshot(*rd.Snapshot, bytes.NewReader(rd.SnapshotData)); err != nil {
		n.setFatal(fmt.Errorf("raft: saving received snapshot: %w", err))
		return false
	}
	if err := n.st.Save(rd.HardState, rd.Entries); err != nil {
		n.setFatal(fmt.Errorf("raft: persisting log: %w", err))
		return false
	}
	n.durableTerm = rd.HardState.Term
	n.send(rd.Messages)
	n.app.push(applyTask{snap: rd.Snapshot, snapData: rd.SnapshotData, entries: rd.CommittedEntries, reads: n.readWaits(rd.ReadStates)})
	n.core.Advance(rd)
	return true
}

// sendBeforeSave sends the messages that do not depend on the write about
// to happen and returns the others, in their order. A leader's
// AppendEntries and heartbeats may leave while its own write of the same
// entries is in flight (dissertation section 10.2.1), so the two overlap:
// the Core counts the leader toward a commit only once Advance reports its
// entries durable. Only messages of a term already durable go early (a
// single voter wins its election within one Ready, and must not announce a
// term it could forget in a crash). Everything else (votes,
// acknowledgements of entries) waits for the write.
func (n *Node) sendBeforeSave(msgs []Message) []Message {
	early := n.earlyMsgs[:0]
	rest := msgs[:0]
	for _, m := range msgs {
		if m.Type == MsgApp || m.Type == MsgHeartbeat {
			early = append(early, m)
		} else {
			rest = append(rest, m)
		}
	}
	if len(early) > 0 {
		n.tr.Send(early)
	}
	clear(early)
	n.earlyMsgs = early[:0]
	return rest
}

// send hands messages to the transport; a snapshot request starts a
// chunked transfer on another goroutine so a large one never stalls the
// loop.
func (n *Node) send(msgs []Message) {
	j := 0
	for _, m := range msgs {
		if m.Type == MsgSnap {
			n.startSnapshotSend(m)
			continue
		}
		msgs[j] = m
		j++
	}
	if j > 0 {
		n.tr.Send(msgs[:j])
	}
}

// readWaits turns ReadStates into waits for the apply goroutine, failing
// the reads that were refused.
func (n *Node) readWaits(rs []ReadState) []readWait {
	if len(rs) == 0 {
		return nil
	}
	out := make([]readWait, 0, len(rs))
	n.readsMu.Lock()
	defer n.readsMu.Unlock()
	for _, r := range rs {
		ch, ok := n.reads[r.Context]
		if !ok {
			continue // the caller gave up
		}
		delete(n.reads, r.Context)
		if r.Index == 0 {
			ch <- n.notLeader()
			continue
		}
		out = append(out, readWait{index: r.Index, done: ch})
	}
	return out
}

func (n *Node) handleProposals(first *proposal) {
	batch := append(n.propBatch[:0], first)
drain:
	for len(batch) < maxPropBatch {
		select {
		case p := <-n.propc:
			batch = append(batch, p)
		default:
			break drain
		}
	}
	cmds := n.cmdBatch[:0]
	for _, p := range batch {
		cmds = append(cmds, p.data)
	}
	// Under Config.MaxUncommittedBytes only a prefix of the batch may fit;
	// the rest is dropped, as it would be if proposed one by one.
	k := len(cmds)
	if n.core.Role() == Leader {
		k = n.core.admit(cmds)
	}
	for _, p := range batch[k:] {
		p.finish(nil, ErrProposalDropped)
	}
	if k > 0 {
		idx, err := n.core.Propose(cmds[:k]...)
		if err != nil {
			err = n.wrapNotLeader(err)
			for _, p := range batch[:k] {
				p.finish(nil, err)
			}
		} else {
			n.app.register(batch[:k], idx, n.core.Term())
		}
	}
	clear(batch)
	clear(cmds)
	n.propBatch, n.cmdBatch = batch[:0], cmds[:0]
}

// notLeader builds a NotLeaderError from the Core's current knowledge. It
// runs on the loop goroutine.
func (n *Node) notLeader() *NotLeaderError {
	e := &NotLeaderError{Leader: n.core.Leader()}
	if s, ok := n.core.Config().Server(e.Leader); ok {
		e.LeaderAddr = s.Addr
	}
	return e
}

func (n *Node) wrapNotLeader(err error) error {
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		return n.notLeader()
	}
	return err
}

// observe reports role, term and leader changes, fails proposals that lost
// their leader, and keeps the transport's peer list current.
func (n *Node) observe() {
	o := Observation{ID: n.id, Role: n.core.Role(), Term: n.core.Term(), Leader: n.core.Leader()}
	if ci := n.core.confs.latest().index; ci != n.confIndex {
		n.confIndex = ci
		n.tr.SetPeers(n.core.Config().Servers)
	}
	n.mu.Lock()
	prev := n.obs
	if o == prev {
		n.mu.Unlock()
		return
	}
	n.obs = o
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
	if prev.Role == Leader && (o.Role != Leader || o.Term != prev.Term) {
		n.app.failPending(n.core.log.committed, ErrLeadershipLost)
	}
	n.logger.Debug("observation", "role", o.Role, "term", o.Term, "leader", uint64(o.Leader))
	if n.cfg.Observer != nil {
		n.obsQueue = append(n.obsQueue, o) // called by settle on the loop
	}
}

func (n *Node) setFatal(err error) {
	n.logger.Error("node stopping on fatal error", "err", err)
	n.mu.Lock()
	if n.fatal == nil {
		n.fatal = err
	}
	n.mu.Unlock()
}

// fail stops the node from another goroutine because of err.
func (n *Node) fail(err error) {
	n.setFatal(err)
	n.stopOnce.Do(func() { close(n.stopc) })
}

// shutdown releases everything; it runs on the loop goroutine as it exits.
func (n *Node) shutdown() {
	final := n.core.Status()
	close(n.loopExit)
	n.persist.stop()
	// Fail queued proposals.
	for {
		select {
		case p := <-n.propc:
			p.finish(nil, ErrStopped)
			continue
		default:
		}
		break
	}
	n.app.stop()
	n.wg.Wait()
	if err := n.tr.Close(); err != nil {
		n.logger.Warn("closing transport", "err", err)
	}
	n.readsMu.Lock()
	for id, ch := range n.reads {
		ch <- ErrStopped
		delete(n.reads, id)
	}
	n.readsMu.Unlock()
	final.Applied = n.app.applied.Load()
	final.DroppedMessages = n.dropped.Load()
	final.Stopped = true
	final.Progress = nil
	n.mu.Lock()
	n.final = final
	n.mu.Unlock()
	close(n.donec)
}

// do runs f on the loop goroutine and waits for it.
func (n *Node) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case n.reqc <- func() { f(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopExit:
		return ErrStopped
	}
	<-done
	return nil
}

// Stop stops the node: it fails pending calls with ErrStopped, waits for its
// goroutines to finish and closes the transport. It returns the error that
// stopped the node if it had already stopped by itself, and ErrStopped if
// Stop was called before.
func (n *Node) Stop() error {
	if n.stopCalled.Swap(true) {
		<-n.donec
		return ErrStopped
	}
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.donec
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatal
}

// Done returns a channel closed once the node has stopped, by Stop or by a
// fatal error (see Err).
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the error that stopped the node by itself, if any.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatal
}

// Propose replicates cmd and returns the StateMachine's result for it once
// it is applied on this node. Errors say what happened to cmd:
//   - *NotLeaderError: this node is not the leader; cmd was not appended.
//   - ErrLeadershipLost: leadership was lost in flight; cmd may commit.
//   - ErrProposalDropped: cmd was not appended (the leader already holds
//     Config.MaxUncommittedBytes of uncommitted entries, or is handing over
//     leadership) or was overwritten; it will not commit.
//   - a context error after cmd was handed to the node: outcome unknown.
//     Once cmd is queued, Propose notices ctx is done within about one
//     TickInterval (it does not watch ctx.Done() itself: many proposers
//     sharing one context would contend on that channel); a cmd the loop
//     has not yet taken from its queue (the loop is blocked writing a
//     snapshot, say) waits for the loop to take it.
//   - ErrStopped: the node is stopped.
//
// cmd must not be modified after the call.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if n.stopCalled.Load() {
		return nil, ErrStopped
	}
	p := getProposal()
	p.data = cmd
	if ctx.Done() != nil {
		p.ctx = ctx
	}
	if !n.proposeInline(p) {
		if err := n.queueProposal(ctx, p); err != nil {
			putProposal(p)
			return nil, err
		}
	}
	// If the loop was still running after p was queued (or proposed
	// inline, which needs the node not halted), p was queued before
	// shutdown drains propc, so p is sure to be finished: by the loop, by
	// the applier, or by shutdown (queued and pending proposals are failed
	// with ErrStopped). Only otherwise watch donec as well; a
	// nil channel is never ready and, like a non-blocking receive on an
	// open empty channel, takes no lock.
	select {
	case <-n.loopExit:
	default:
		// The common case: wait on p alone. If ctx is done first, the
		// applier's canceller fails p with ctx.Err() within a tick once
		// the loop has registered it (see cancelExpired for why this
		// does not select on ctx.Done()).
		r := <-p.done
		putProposal(p)
		return r.val, r.err
	}
	select {
	case r := <-p.done:
		putProposal(p)
		return r.val, r.err
	case <-ctx.Done():
		// p may still be completed later; it is not recycled.
		return nil, ctx.Err()
	case <-n.donec:
		return nil, ErrStopped
	}
}

// proposeInline proposes p on the calling goroutine, sparing the loop a
// wake-up, if the node leads and is idle: nothing queued, and every entry
// committed. With entries in flight more proposals are likely on their
// way, and the loop proposes them in fewer, larger batches (proposing
// inline under load halved the in-memory benchmark's 64-proposer
// throughput). A node that does not lead (or is handing leadership over)
// leaves the refusal to the loop: callers retrying at once would
// otherwise contend for coreMu without ever blocking, starving the loop's
// ticks and delaying the election they wait for. It reports whether it
// took p.
func (n *Node) proposeInline(p *proposal) bool {
	if len(n.propc) > 0 || !n.coreMu.TryLock() {
		return false
	}
	if n.halted || n.core.Role() != Leader || n.core.leadTransferee != None || n.core.log.committed != n.core.log.lastIndex() {
		n.coreMu.Unlock()
		return false
	}
	n.inlineProposals.Add(1)
	n.handleProposals(p)
	n.settle(false)
	return true
}

// queueProposal hands p to the loop. A non-blocking send comes first: it
// locks only propc, not the channels every proposer shares (loopExit,
// donec), which under many concurrent proposers is where the time went.
func (n *Node) queueProposal(ctx context.Context, p *proposal) error {
	select {
	case n.propc <- p:
		return nil
	default:
	}
	select {
	case n.propc <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopExit:
		return ErrStopped
	}
}

// Read waits until a linearizable read is possible: when it returns nil the
// local StateMachine reflects every write committed before Read was called,
// so reading it directly is linearizable (ReadIndex, dissertation section
// 6.4). On a follower the read index is obtained from the leader. It returns
// a *NotLeaderError when no leader is known or leadership was lost.
func (n *Node) Read(ctx context.Context) error {
	if n.stopCalled.Load() {
		return ErrStopped
	}
	id := n.readID.Add(1)
	ch := make(chan error, 1)
	n.readsMu.Lock()
	n.reads[id] = ch
	n.readsMu.Unlock()
	defer func() {
		n.readsMu.Lock()
		delete(n.reads, id)
		n.readsMu.Unlock()
	}()
	var rerr error
	if err := n.do(ctx, func() {
		if err := n.core.ReadIndex(id); err != nil {
			rerr = n.wrapNotLeader(err)
		}
	}); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return ErrStopped
	}
}

// Status reports the node's current state. After the node stops it reports
// the final state with Stopped set.
func (n *Node) Status() Status {
	var s Status
	if err := n.do(context.Background(), func() { s = n.core.Status() }); err != nil {
		<-n.donec
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.final
	}
	s.Applied = n.app.applied.Load()
	s.DroppedMessages = n.dropped.Load()
	return s
}

// ID returns the node's ID.
func (n *Node) ID() NodeID { return n.id }

// Leader returns the leader this node currently knows of, or None.
func (n *Node) Leader() NodeID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.obs.Leader
}

// Changes returns the latest observation and a channel closed at the next
// change of role, term or leader, so callers can wait for one without
// polling.
func (n *Node) Changes() (Observation, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.obs, n.changed
}

// Campaign makes the node start an election now instead of waiting for its
// election timeout.
func (n *Node) Campaign(ctx context.Context) error {
	if n.stopCalled.Load() {
		return ErrStopped
	}
	return n.do(ctx, func() { n.core.Campaign() })
}

// TransferLeadership hands leadership to the voter to and waits until this
// node sees to as leader. It returns a *NotLeaderError if this node is not
// the leader, and a *TransferError if the transfer is abandoned (the
// target did not win within an election timeout) or ctx ends first.
func (n *Node) TransferLeadership(ctx context.Context, to NodeID) error {
	if n.stopCalled.Load() {
		return ErrStopped
	}
	var terr error
	if err := n.do(ctx, func() { terr = n.wrapNotLeader(n.core.TransferLeadership(to)) }); err != nil {
		return err
	}
	if terr != nil {
		return terr
	}
	// Give up after twice the abandon time, so a timeout is always
	// reported even if the leader never notices.
	limit := time.NewTimer(4 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer limit.Stop()
	for {
		o, ch := n.Changes()
		if o.Leader == to {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return &TransferError{To: to, Reason: ctx.Err().Error()}
		case <-limit.C:
			return &TransferError{To: to, Reason: "target did not win an election in time"}
		case <-n.donec:
			return ErrStopped
		}
	}
}

// Snapshot takes a snapshot of the state machine now (if anything was
// applied since the last one) and returns once it has been captured; it is
// written to Storage in the background and the log compacted after it.
func (n *Node) Snapshot(ctx context.Context) error {
	if n.stopCalled.Load() {
		return ErrStopped
	}
	reply := make(chan error, 1)
	select {
	case n.app.snapReq <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopExit:
		return ErrStopped
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errSnapshotInProgress = errors.New("raft: a snapshot is already being written")

// persistSnapshot writes a snapshot taken at index to Storage and then
// compacts the log. It runs on a background goroutine.
func (n *Node) persistSnapshot(index uint64, snap Snapshot) error {
	var meta SnapshotMeta
	var merr error
	ctx := context.Background()
	if err := n.do(ctx, func() { meta, merr = n.core.SnapshotMetaAt(index) }); err != nil {
		return err
	}
	if merr != nil {
		return merr
	}
	if err := saveSnapshot(n.st, meta, snap); err != nil {
		return err
	}
	var cerr error
	if err := n.do(ctx, func() {
		compactTo := uint64(0)
		if meta.Index > n.cfg.TrailingEntries {
			compactTo = meta.Index - n.cfg.TrailingEntries
		}
		if cerr = n.core.SnapshotSaved(meta, compactTo); cerr != nil {
			return
		}
		if off := n.core.log.offset; off > 0 {
			n.persist.submit(persistJob{compactTo: off})
			n.inflight++
		}
	}); err != nil {
		return err
	}
	if cerr == nil {
		n.logger.Info("snapshot saved", "index", meta.Index, "term", meta.Term)
	}
	return cerr
}
