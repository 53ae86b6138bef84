package raft

import (
	"errors"
	"fmt"
	"io"
)

// StateMachine is the application's replicated state. The Node calls Apply
// for every committed EntryNormal entry, in log order, exactly once per
// index in the life of the StateMachine value; configuration and no-op
// entries are not passed to it.
//
// Apply, Snapshot and Restore are never called concurrently with each
// other: each call returns before the next begins (and happens before it,
// in the memory model's sense). They are called on the Node's apply
// goroutine, except that while Apply stays quick (a few tens of
// microseconds) and the apply goroutine is idle, the goroutine that
// committed an entry, such as a transport's reader, may call Apply itself
// to spare a hand-off. Snapshot.WriteTo runs on another goroutine while
// Apply continues, so Snapshot must capture a point-in-time view that later
// Applies do not change.
type StateMachine interface {
	// Apply applies a committed command and returns its result, which is
	// handed back to the Propose call that proposed it (on the node that
	// proposed it). Apply must be deterministic: every replica applying
	// the same entries must reach the same state.
	Apply(e Entry) any
	// Snapshot returns a point-in-time view of the state, cheap to take.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with the contents of a snapshot
	// written by Snapshot.WriteTo. If it returns an error the Node stops:
	// it will not continue from a half-restored state.
	Restore(r io.Reader) error
}

// Snapshot is a point-in-time view of a StateMachine, written out off the
// apply goroutine.
type Snapshot interface {
	// WriteTo writes the snapshot's bytes to w.
	WriteTo(w io.Writer) (int64, error)
	// Release is called when the snapshot is no longer needed.
	Release()
}

// Errors returned by Node methods.
var (
	// ErrStopped is returned by every call on a stopped Node.
	ErrStopped = errors.New("raft: node is stopped")
	// ErrLeadershipLost means this node lost leadership while the
	// proposal was in flight: it may or may not commit. Retrying may apply
	// a command twice unless the state machine deduplicates it.
	ErrLeadershipLost = errors.New("raft: leadership lost while the proposal was in flight; outcome unknown")
)

// NotLeaderError is returned when a request that needs the leader reaches
// another node. The request was not carried out; it is safe to retry on the
// leader.
type NotLeaderError struct {
	// Leader is the leader this node knows of, or None.
	Leader NodeID
	// LeaderAddr is the leader's address from the configuration, if known.
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == None {
		return "raft: not the leader (no leader known)"
	}
	return fmt.Sprintf("raft: not the leader (leader is %d)", e.Leader)
}

// TransferError explains why a leadership transfer did not happen.
type TransferError struct {
	To     NodeID
	Reason string
}

func (e *TransferError) Error() string {
	return fmt.Sprintf("raft: leadership transfer to %d failed: %s", e.To, e.Reason)
}

// Status is a point-in-time report of a node's state.
type Status struct {
	ID         NodeID
	Role       Role
	Term       uint64
	Vote       NodeID
	Leader     NodeID
	Commit     uint64 // highest index known committed
	Applied    uint64 // highest index applied to the state machine
	FirstIndex uint64 // first index still in the log
	LastIndex  uint64 // last index in the log
	Snapshot   uint64 // index of the latest durable snapshot
	Config     Configuration
	// Progress is the leader's view of every member (leader only).
	Progress map[NodeID]FollowerProgress
	// DroppedMessages counts incoming messages dropped because the node's
	// inbox was full or the node was not running.
	DroppedMessages uint64
	// Stopped is true once the node has stopped.
	Stopped bool
}

// FollowerProgress is a leader's view of one member's log.
type FollowerProgress struct {
	Match         uint64
	Next          uint64
	State         ProgressState
	Inflight      int // appends sent and not yet acknowledged
	InflightBytes int // their entry data bytes (see Config.MaxInflightBytes)
	RecentActive  bool
}
