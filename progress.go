package raft

import "fmt"

// ProgressState is how a leader is currently replicating to one follower.
type ProgressState uint8

const (
	// StateProbe: the leader does not know where the follower's log ends.
	// It sends one AppendEntries at a time and waits for the answer.
	StateProbe ProgressState = iota
	// StateReplicate: the follower's log is known to match; the leader
	// pipelines AppendEntries up to the in-flight window.
	StateReplicate
	// StateSnapshot: the follower needs entries the leader has compacted;
	// a snapshot is on its way.
	StateSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case StateProbe:
		return "probe"
	case StateReplicate:
		return "replicate"
	case StateSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// progress is the leader's view of one follower (Raft paper, Figure 2:
// nextIndex and matchIndex), plus flow control.
//
// Invariants: match < next; in StateReplicate every in-flight append ends
// at an index < next.
type progress struct {
	match, next uint64
	state       ProgressState
	// probeSent is set in StateProbe once an append is outstanding; no more
	// are sent until a response or a heartbeat response clears it.
	probeSent bool
	// pendingSnapshot is the index of the snapshot sent in StateSnapshot.
	pendingSnapshot uint64
	// stateTicks counts ticks spent in the current state (used to retry a
	// snapshot that got lost).
	stateTicks int
	// recentActive is set when the follower was heard from since the last
	// check-quorum round.
	recentActive bool
	// readAck is the highest read sequence the follower acknowledged.
	readAck  uint64
	inflight inflights
}

func (p *progress) becomeProbe() {
	if p.state == StateSnapshot {
		p.next = max(p.match+1, p.pendingSnapshot+1)
	} else {
		p.next = p.match + 1
	}
	p.state, p.probeSent, p.pendingSnapshot, p.stateTicks = StateProbe, false, 0, 0
	p.inflight.reset()
}

func (p *progress) becomeReplicate() {
	p.state, p.probeSent, p.pendingSnapshot, p.stateTicks = StateReplicate, false, 0, 0
	p.next = p.match + 1
	p.inflight.reset()
}

func (p *progress) becomeSnapshot(index uint64) {
	p.state, p.probeSent, p.pendingSnapshot, p.stateTicks = StateSnapshot, false, index, 0
	p.inflight.reset()
}

// maybeUpdate records that the follower holds entries up to n. It reports
// whether match advanced.
func (p *progress) maybeUpdate(n uint64) bool {
	updated := false
	if p.match < n {
		p.match = n
		updated = true
		p.probeSent = false
	}
	p.next = max(p.next, n+1)
	return updated
}

// maybeDecrTo handles a rejection of the append whose previous index was
// rejected, moving next back to the hint. It reports whether it changed
// anything (a stale rejection changes nothing).
func (p *progress) maybeDecrTo(rejected, hint uint64) bool {
	if p.state == StateReplicate {
		// In replicate state only a rejection of the append right after
		// match can be current; older ones are duplicates.
		if rejected <= p.match {
			return false
		}
		p.next = max(p.match+1, min(hint, rejected))
		return true
	}
	if p.next-1 != rejected {
		return false
	}
	p.next = max(p.match+1, min(hint, rejected))
	p.probeSent = false
	return true
}

// isPaused reports whether the leader should hold back appends.
func (p *progress) isPaused() bool {
	switch p.state {
	case StateProbe:
		return p.probeSent
	case StateReplicate:
		return p.inflight.full()
	default:
		return true
	}
}

// sentEntries updates flow control after an append of n entries holding
// bytes of data, ending at last, was sent.
func (p *progress) sentEntries(n int, last uint64, bytes int) {
	switch p.state {
	case StateReplicate:
		if n > 0 {
			p.next = last + 1
			p.inflight.add(last, bytes)
		}
	case StateProbe:
		p.probeSent = true
	}
}

// inflights is a bounded FIFO of the appends in flight: the last index of
// each and its entry data bytes. It is full at size appends, or at
// maxBytes bytes if that is set.
type inflights struct {
	buf      []inflight
	start    int
	count    int
	size     int
	bytes    int // data bytes of the appends in flight
	maxBytes int // 0: no byte limit
}

type inflight struct {
	last  uint64
	bytes int
}

func newInflights(size, maxBytes int) inflights { return inflights{size: size, maxBytes: maxBytes} }

func (in *inflights) full() bool {
	return in.count == in.size || (in.maxBytes > 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) add(last uint64, bytes int) {
	if in.buf == nil {
		in.buf = make([]inflight, in.size)
	}
	in.buf[(in.start+in.count)%in.size] = inflight{last, bytes}
	in.count++
	in.bytes += bytes
}

// freeTo releases every in-flight append ending at or before index.
func (in *inflights) freeTo(index uint64) {
	for in.count > 0 && in.buf[in.start].last <= index {
		in.bytes -= in.buf[in.start].bytes
		in.start = (in.start + 1) % in.size
		in.count--
	}
}

// freeFirst releases the oldest in-flight append.
func (in *inflights) freeFirst() {
	if in.count > 0 {
		in.freeTo(in.buf[in.start].last)
	}
}

func (in *inflights) reset() { in.start, in.count, in.bytes = 0, 0, 0 }
