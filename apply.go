package raft

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// proposal is one caller waiting for its entry to be applied.
type proposal struct {
	data  []byte
	cc    *ConfChange
	index uint64
	term  uint64
	done  chan proposalResult // capacity 1: delivering never blocks
	ctx   context.Context     // the caller's, if it can be cancelled; checked by cancelExpired
}

type proposalResult struct {
	val any
	err error
}

var proposalPool = sync.Pool{New: func() any { return &proposal{done: make(chan proposalResult, 1)} }}

func getProposal() *proposal { return proposalPool.Get().(*proposal) }

// putProposal recycles p once its caller has read the result.
func putProposal(p *proposal) {
	p.data, p.cc, p.index, p.term, p.ctx = nil, nil, 0, 0, nil
	proposalPool.Put(p)
}

func (p *proposal) finish(val any, err error) { p.done <- proposalResult{val, err} }

// readWait is a linearizable read waiting for the state machine to reach
// index.
type readWait struct {
	index uint64
	done  chan error
}

// applyTask is one batch of work for the apply goroutine, in log order.
type applyTask struct {
	snap     *SnapshotMeta
	snapData []byte
	entries  []Entry
	reads    []readWait
}

// inlineApplyCost is the apply time per task under which a goroutine that
// committed entries off the loop applies them itself when the apply
// goroutine is idle, sparing a wake-up of that goroutine on the path of
// each lone proposal (over TCP this took 5.6% off a proposal's p50).
const inlineApplyCost = 25 * time.Microsecond

// inlineApplyMax is the most entries applyNow applies at once; a longer
// queue (a follower catching up, say) is left to the apply goroutine, so
// that a transport's reader is not held up applying it.
const inlineApplyMax = 256

// applier owns the StateMachine: it applies committed entries in order,
// delivers results to waiting proposals, releases reads and takes
// snapshots. The Node's loop never waits for it. Its own goroutine does
// this work, except that a goroutine which committed entries while
// stepping a message or proposal off the loop (Node.settle) may apply them
// itself if the apply goroutine is idle and applying has been quick (see
// applyNow). runMu makes the two take turns.
type applier struct {
	n  *Node
	sm StateMachine

	// runMu is held by whoever calls the StateMachine or touches the
	// fields marked "runMu" below.
	runMu   sync.Mutex
	stopped bool // runMu: stop ran, or an apply failed; nothing more is applied
	// applyCost is a moving average of one task's apply time, which
	// gates applyNow.
	applyCost movingCost
	// inlineApplies counts the batches applyNow applied (for tests).
	inlineApplies atomic.Uint64

	mu      sync.Mutex
	queue   []applyTask
	pending map[uint64]*proposal // by log index; guarded by mu
	notify  chan struct{}        // capacity 1
	snapReq chan chan error
	stopc   chan struct{}
	done    chan struct{}
	// cancelDone is closed when runCanceller returns.
	cancelDone chan struct{}

	applied      atomic.Uint64
	lastSnap     uint64 // runMu: index of the latest snapshot taken or restored
	snapshotting atomic.Bool
	waiting      []readWait  // runMu: reads whose index is not applied yet
	claimed      []*proposal // runMu: scratch for apply, proposals of one task's entries
	batch        []applyTask // runMu: the tasks being applied
}

func newApplier(n *Node, sm StateMachine, applied uint64) *applier {
	a := &applier{
		n:        n,
		sm:       sm,
		pending:  make(map[uint64]*proposal),
		notify:   make(chan struct{}, 1),
		snapReq:  make(chan chan error),
		stopc:    make(chan struct{}),
		done:     make(chan struct{}),
		lastSnap: applied,

		cancelDone: make(chan struct{}),
	}
	a.applied.Store(applied)
	return a
}

// register records proposals whose entries start at first in term.
func (a *applier) register(ps []*proposal, first, term uint64) {
	a.mu.Lock()
	for i, p := range ps {
		p.index, p.term = first+uint64(i), term
		a.pending[p.index] = p
	}
	a.mu.Unlock()
}

// failPending fails every proposal whose index is above keep: their
// outcome is no longer ours to report.
func (a *applier) failPending(keep uint64, err error) {
	a.mu.Lock()
	for idx, p := range a.pending {
		if idx > keep {
			p.finish(nil, err)
			delete(a.pending, idx)
		}
	}
	a.mu.Unlock()
}

// cancelExpired fails, with their context's error, the registered
// proposals whose caller's context is done. Proposers wait only on their
// own result channel: selecting on a context's Done channel as well costs
// a lock on that channel per proposal, and when many goroutines share one
// context that lock is contended (a fifth of the throughput of 64
// proposers sharing a context was spent there). The proposal stays in the
// log and may still commit, as with any cancelled Propose.
func (a *applier) cancelExpired() {
	a.mu.Lock()
	for idx, p := range a.pending {
		if p.ctx != nil {
			if err := p.ctx.Err(); err != nil {
				p.finish(nil, err)
				delete(a.pending, idx)
			}
		}
	}
	a.mu.Unlock()
}

// runCanceller calls cancelExpired every interval until the applier
// stops. It runs apart from the loop and the applier so that a caller's
// context is honored even while they wait on the disk or the StateMachine.
func (a *applier) runCanceller(interval time.Duration) {
	defer close(a.cancelDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.cancelExpired()
		case <-a.stopc:
			return
		}
	}
}

// push queues t and wakes the apply goroutine.
func (a *applier) push(t applyTask) {
	a.enqueue(t)
	a.signal()
}

// enqueue queues t without waking anyone: the caller then calls signal or
// applyNow.
func (a *applier) enqueue(t applyTask) {
	a.mu.Lock()
	a.queue = append(a.queue, t)
	a.mu.Unlock()
}

// signal wakes the apply goroutine.
func (a *applier) signal() {
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// applyNow applies the queued tasks on the calling goroutine if applying
// has been quick and nobody else is applying; otherwise it leaves them to
// the apply goroutine. Taking turns on runMu keeps the order: whoever holds
// it takes the whole queue. Restoring a snapshot, taking one that comes
// due, and long queues are left to the apply goroutine, since any of them
// may be slow.
func (a *applier) applyNow() {
	if !a.applyCost.below(inlineApplyCost) || !a.runMu.TryLock() {
		a.signal()
		return
	}
	if a.applyInline() {
		a.signal()
	}
}

// applyInline is applyNow's part under runMu (unlocked by a defer, in case
// Apply panics and a transport recovers). It reports whether work is left
// for the apply goroutine.
func (a *applier) applyInline() (left bool) {
	defer a.runMu.Unlock()
	_, left = a.applyQueued(true)
	return left || a.snapshotDue()
}

// applyQueued applies every queued task (runMu held), unless inline is set
// and the queue holds a snapshot to restore or more than inlineApplyMax
// entries (a follower catching up): then it leaves them all queued and
// reports left. It reports ok false if nothing more may be applied: the
// applier stopped, or an apply failed and the node is stopping.
func (a *applier) applyQueued(inline bool) (ok, left bool) {
	if a.stopped {
		return false, false
	}
	a.mu.Lock()
	if inline {
		n := 0
		for i := range a.queue {
			n += len(a.queue[i].entries)
			if a.queue[i].snap != nil || n > inlineApplyMax {
				a.mu.Unlock()
				return true, true
			}
		}
	}
	batch := a.queue
	a.queue = a.batch[:0]
	a.mu.Unlock()
	if inline && len(batch) > 0 {
		a.inlineApplies.Add(1)
	}
	for i := range batch {
		start := time.Now()
		err := a.apply(&batch[i])
		a.applyCost.add(time.Since(start))
		if err != nil {
			a.stopped = true
			clear(batch)
			a.n.fail(err)
			return false, false
		}
		batch[i] = applyTask{}
	}
	a.batch = batch[:0]
	return true, false
}

func (a *applier) run() {
	defer close(a.done)
	for {
		select {
		case <-a.stopc:
			return
		case reply := <-a.snapReq:
			a.runMu.Lock()
			reply <- a.snapshot()
			a.runMu.Unlock()
			continue
		case <-a.notify:
		}
		a.runMu.Lock()
		ok, _ := a.applyQueued(false)
		if ok {
			a.maybeSnapshot()
		}
		a.runMu.Unlock()
		if !ok {
			return
		}
	}
}

func (a *applier) apply(t *applyTask) error {
	if t.snap != nil && t.snap.Index > a.applied.Load() {
		if err := a.sm.Restore(bytes.NewReader(t.snapData)); err != nil {
			return fmt.Errorf("raft: state machine failed to restore snapshot at index %d: %w", t.snap.Index, err)
		}
		a.applied.Store(t.snap.Index)
		a.lastSnap = t.snap.Index
	}
	ents := t.entries
	for len(ents) > 0 && ents[0].Index <= a.applied.Load() {
		ents = ents[1:] // never apply an index twice
	}
	// Claim the proposals waiting on these entries under one lock instead
	// of one lock per entry. They are all registered already: a proposal
	// is registered before its entry can commit. Once claimed, a
	// concurrent failPending no longer sees them, which is right: their
	// entries are committed, so their outcome is known.
	claimed := a.claimed[:0]
	if len(ents) > 0 {
		a.mu.Lock()
		if len(a.pending) > 0 {
			for i := range ents {
				idx := ents[i].Index
				p := a.pending[idx]
				if p != nil {
					delete(a.pending, idx)
				}
				claimed = append(claimed, p)
			}
		}
		a.mu.Unlock()
	}
	for i := range ents {
		e := &ents[i]
		var val any
		if e.Type == EntryNormal {
			val = a.sm.Apply(*e)
		}
		a.applied.Store(e.Index)
		if i < len(claimed) && claimed[i] != nil {
			if p := claimed[i]; p.term == e.Term {
				p.finish(val, nil)
			} else {
				p.finish(nil, ErrProposalDropped)
			}
		}
	}
	clear(claimed)
	a.claimed = claimed[:0]
	a.waiting = append(a.waiting, t.reads...)
	applied := a.applied.Load()
	kept := a.waiting[:0]
	for _, r := range a.waiting {
		if r.index <= applied {
			r.done <- nil
		} else {
			kept = append(kept, r)
		}
	}
	clear(a.waiting[len(kept):])
	a.waiting = kept
	return nil
}

// maybeSnapshot takes a snapshot when enough entries were applied since the
// last one.
func (a *applier) maybeSnapshot() {
	if !a.snapshotDue() {
		return
	}
	if err := a.snapshot(); err != nil {
		a.n.logger.Warn("automatic snapshot failed", "err", err)
	}
}

// snapshotDue reports whether enough entries were applied since the last
// snapshot to take another (runMu held).
func (a *applier) snapshotDue() bool {
	th := a.n.cfg.SnapshotThreshold
	return th != 0 && a.applied.Load()-a.lastSnap >= th && !a.snapshotting.Load()
}

// snapshot captures the state machine now and persists it off this
// goroutine. It returns once the capture is taken; persisting reports
// through the logger. For on-demand snapshots see Node.Snapshot.
func (a *applier) snapshot() error {
	if !a.snapshotting.CompareAndSwap(false, true) {
		return errSnapshotInProgress
	}
	index := a.applied.Load()
	if index == a.lastSnap {
		a.snapshotting.Store(false)
		return nil
	}
	snap, err := a.sm.Snapshot()
	if err != nil {
		a.snapshotting.Store(false)
		return fmt.Errorf("raft: state machine snapshot failed: %w", err)
	}
	a.lastSnap = index
	a.n.wg.Add(1)
	go func() {
		defer a.n.wg.Done()
		defer a.snapshotting.Store(false)
		defer snap.Release()
		if err := a.n.persistSnapshot(index, snap); err != nil {
			a.n.logger.Warn("snapshot not saved", "index", index, "err", err)
		}
	}()
	return nil
}

// saveSnapshot streams snap through a pipe into Storage.SaveSnapshot.
func saveSnapshot(st Storage, meta SnapshotMeta, snap Snapshot) error {
	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err)
		wrote <- err
	}()
	err := st.SaveSnapshot(meta, pr)
	pr.CloseWithError(io.ErrClosedPipe)
	if werr := <-wrote; err == nil && werr != nil {
		err = fmt.Errorf("raft: writing snapshot: %w", werr)
	}
	return err
}

func (a *applier) stop() {
	close(a.stopc)
	<-a.done
	<-a.cancelDone
	// Wait out an apply on another goroutine (applyNow) and keep any
	// from starting.
	a.runMu.Lock()
	defer a.runMu.Unlock()
	a.stopped = true
	a.mu.Lock()
	for idx, p := range a.pending {
		p.finish(nil, ErrStopped)
		delete(a.pending, idx)
	}
	a.mu.Unlock()
	for _, r := range a.waiting {
		r.done <- ErrStopped
	}
	a.waiting = nil
}
