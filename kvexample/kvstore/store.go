// Package kvstore is the replicated state machine of the key-value example:
// a map from string keys to byte values with put, delete and
// compare-and-set, exactly-once writes for retrying clients, and snapshots
// that are cheap to take.
//
// Commands reach the Store through the Raft log: encode a Command with
// MarshalBinary, pass the bytes to raft.Node.Propose, and the Result comes
// back as Propose's value. Reads that must be linearizable call
// raft.Node.Read first and then Store.Get on the same node.
package kvstore

import (
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/raftgo/raft"
)

// DefaultMaxSessions is the number of client sessions a Store keeps unless
// told otherwise.
const DefaultMaxSessions = 10000

// ErrStaleSequence is the Result.Err of a command whose sequence number is
// below the last one applied for its client: the client has already moved
// past it, and its result is no longer kept.
var ErrStaleSequence = errors.New("kvstore: sequence number is older than the client's last request")

// Result is what Apply returns for a command (it is the value raft.Node.
// Propose hands back).
type Result struct {
	// Index is the log index at which the command was applied (for a
	// duplicate, the index of the original).
	Index uint64
	// Op is the command's operation.
	Op Op
	// OK is true for every put, delete and get, and for a CAS that
	// swapped.
	OK bool
	// Found says whether the key existed before the command (after it,
	// for a get).
	Found bool
	// Value is the value read by a get, or the current value that made a
	// CAS fail. Callers must not modify it.
	Value []byte
	// Duplicate is true when the command repeated the client's last
	// sequence number and this is the stored result of the original.
	Duplicate bool
	// Err is set when the command was not applied: ErrBadCommand or
	// ErrStaleSequence.
	Err error
}

// session is what a Store remembers about one client.
type session struct {
	seq       uint64 // last sequence number applied
	lastIndex uint64 // log index of that command (orders evictions)
	result    Result
}

// Store is a raft.StateMachine holding a key-value map. The raft.Node calls
// Apply, Snapshot and Restore one at a time; Get, Len and Applied may be
// called from any goroutine at the same time.
//
// Values are never modified in place once stored, and Snapshot marks the
// current maps as shared, so the next write copies them (copy-on-write):
// Snapshot itself is O(1), and the snapshot's WriteTo reads the frozen maps
// without holding any lock.
type Store struct {
	maxSessions int

	mu       sync.RWMutex
	data     map[string][]byte
	sessions map[uint64]session
	shared   bool   // data and sessions belong to a live snapshot: copy before writing
	applied  uint64 // highest log index applied
}

var _ raft.StateMachine = (*Store)(nil)

// New returns an empty Store that keeps at most maxSessions client
// sessions (DefaultMaxSessions if maxSessions <= 0). When a new client
// would exceed the limit, the sessions idle longest (by log index) are
// forgotten; every replica forgets the same ones, so Apply stays
// deterministic. Every replica must use the same limit.
func New(maxSessions int) *Store {
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessions
	}
	return &Store{
		maxSessions: maxSessions,
		data:        make(map[string][]byte),
		sessions:    make(map[uint64]session),
	}
}

// Apply decodes and applies one committed command and returns its Result.
// A malformed command changes nothing and returns a Result with Err set.
func (s *Store) Apply(e raft.Entry) any {
	var c Command
	if err := c.UnmarshalBinary(e.Data); err != nil {
		s.mu.Lock()
		s.applied = e.Index
		s.mu.Unlock()
		return Result{Index: e.Index, Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = e.Index
	if c.ClientID != 0 {
		if sess, ok := s.sessions[c.ClientID]; ok {
			switch {
			case c.Seq == sess.seq:
				r := sess.result
				r.Duplicate = true
				return r
			case c.Seq < sess.seq:
				return Result{Index: e.Index, Op: c.Op, Err: ErrStaleSequence}
			}
		}
	}
	s.unshare()
	r := s.apply(e.Index, c)
	if c.ClientID != 0 {
		s.remember(c.ClientID, session{seq: c.Seq, lastIndex: e.Index, result: r})
	}
	return r
}

// apply carries out a decoded command. s.mu is held and the maps are
// private.
func (s *Store) apply(index uint64, c Command) Result {
	cur, found := s.data[c.Key]
	r := Result{Index: index, Op: c.Op, OK: true, Found: found}
	switch c.Op {
	case OpPut:
		s.data[c.Key] = c.Value
	case OpDelete:
		delete(s.data, c.Key)
	case OpCAS:
		match := found && !c.ExpectAbsent && string(cur) == string(c.Expect) ||
			!found && c.ExpectAbsent
		if match {
			s.data[c.Key] = c.Value
		} else {
			r.OK, r.Value = false, nilIfEmpty(cur)
		}
	case OpGet:
		r.Value = nilIfEmpty(cur)
	}
	return r
}

// nilIfEmpty makes an empty value nil, so that a replica restored from a
// snapshot (which cannot tell nil from empty) returns results identical to
// one that applied the log.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// remember stores a client's session, evicting the idlest tenth of the
// sessions when the table is full.
func (s *Store) remember(client uint64, sess session) {
	if _, ok := s.sessions[client]; !ok && len(s.sessions) >= s.maxSessions {
		ids := slices.Collect(maps.Keys(s.sessions))
		slices.SortFunc(ids, func(a, b uint64) int {
			ia, ib := s.sessions[a].lastIndex, s.sessions[b].lastIndex
			if ia != ib {
				if ia < ib {
					return -1
				}
				return 1
			}
			if a < b {
				return -1
			}
			return 1
		})
		evict := max(1, len(ids)/10)
		for _, id := range ids[:evict] {
			delete(s.sessions, id)
		}
	}
	s.sessions[client] = sess
}

// unshare gives the Store private copies of its maps if a snapshot holds
// the current ones. s.mu is held.
func (s *Store) unshare() {
	if !s.shared {
		return
	}
	s.data = maps.Clone(s.data)
	s.sessions = maps.Clone(s.sessions)
	s.shared = false
}

// Get returns the value of key in the local copy and whether it exists.
// For a linearizable read call raft.Node.Read first. The returned slice is
// the caller's.
func (s *Store) Get(key string) ([]byte, bool) {
	s.mu.RLock()
	v, ok := s.data[key]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return append([]byte{}, v...), true
}

// Len returns the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.data)
}

// Sessions returns the number of client sessions kept.
func (s *Store) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions)
}

// Applied returns the highest log index applied to (or restored into) the
// Store.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Snapshot returns a point-in-time view of the Store in O(1): later
// Applies copy the maps before changing them.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shared = true
	return &snapshot{applied: s.applied, data: s.data, sessions: s.sessions}, nil
}
