package raft

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// HardState is the part of a node's state that must be durable before the
// node sends any message that depends on it (Raft paper, Figure 2:
// currentTerm and votedFor). Commit is stored too, as a hint that lets a
// restarted node apply what it knows was committed before hearing from a
// leader; it is written with the next durable batch and may lag.
type HardState struct {
	Term   uint64
	Vote   NodeID
	Commit uint64
}

// IsZero reports whether hs is the zero hard state of a fresh node.
func (hs HardState) IsZero() bool { return hs == HardState{} }

// SnapshotMeta describes a snapshot: the index and term of the last entry it
// covers and the cluster configuration in force at that index.
type SnapshotMeta struct {
	Index  uint64
	Term   uint64
	Config Configuration
}

// State is everything a Storage holds, as returned by Load when a node
// starts.
type State struct {
	HardState HardState
	// Snapshot is the latest durable snapshot's metadata; zero if none.
	Snapshot SnapshotMeta
	// CompactedIndex and CompactedTerm identify the last entry discarded
	// from the front of the log (zero for a log never compacted).
	// Entries[0].Index == CompactedIndex+1 when Entries is not empty.
	CompactedIndex uint64
	CompactedTerm  uint64
	// Entries are the stored log entries after the compaction point, in
	// index order with no gaps. They may begin before Snapshot.Index (a
	// trailing tail kept for lagging followers).
	Entries []Entry
}

// Storage is where a node keeps its durable state: hard state, log entries
// and the latest snapshot.
//
// The Node calls Load once when it starts; after that, Save and Compact are
// called by one goroutine at a time, in order (mostly a background writer
// that keeps the Node's loop free while the disk works; a Storage whose
// Saves return within microseconds is written by whichever goroutine is
// driving the node). SaveSnapshot and
// Snapshot may be called from other goroutines at the same time, so
// implementations must be safe for concurrent use.
// Entries handed to Save are never modified afterwards; an implementation
// may keep them without copying.
//
// Use testing/storagetest to check an implementation against this contract.
type Storage interface {
	// Load returns everything stored. A fresh storage returns the zero State.
	Load() (State, error)
	// Save durably stores hs and then entries, in one batch with (at most)
	// one sync. If entries is not empty, every stored entry with index >=
	// entries[0].Index is discarded first (a conflicting suffix); it is an
	// error if entries[0].Index would leave a gap after the last stored
	// entry or lies at or before the compaction point. When Save returns
	// nil, all of it survives a crash.
	Save(hs HardState, entries []Entry) error
	// SaveSnapshot durably stores a snapshot with the given metadata and
	// the bytes read from r, replacing the previous snapshot. Entries after
	// meta.Index are kept only if the stored entry at meta.Index has term
	// meta.Term; otherwise the whole log is discarded and the compaction
	// point becomes (meta.Index, meta.Term). A snapshot not newer than the
	// stored one is an error.
	SaveSnapshot(meta SnapshotMeta, r io.Reader) error
	// Snapshot opens the latest snapshot for reading. The caller closes it.
	// It returns ErrNoSnapshot if there is none.
	Snapshot() (SnapshotMeta, io.ReadCloser, error)
	// Compact discards the entries with index <= index. index must not
	// exceed the latest snapshot's index or the last stored entry.
	Compact(index uint64) error
}

// ErrNoSnapshot is returned by Storage.Snapshot when no snapshot is stored.
var ErrNoSnapshot = errors.New("raft: no snapshot stored")

// ErrCompacted is returned when entries are asked of a Storage at or before
// its compaction point.
var ErrCompacted = errors.New("raft: requested index is compacted")

// MemoryStorage is a Storage that keeps everything in memory. It is durable
// only for the life of the process: a Node stopped and started again on the
// same MemoryStorage keeps its term, vote, log and snapshot, which is what
// tests of restarts need. The zero value is ready to use.
type MemoryStorage struct {
	mu       sync.Mutex
	hs       HardState
	snap     SnapshotMeta
	snapData []byte
	compIdx  uint64
	compTerm uint64
	ents     []Entry // ents[i].Index == compIdx+1+i
}

var _ Storage = (*MemoryStorage)(nil)

// NewMemoryStorage returns an empty MemoryStorage.
func NewMemoryStorage() *MemoryStorage { return &MemoryStorage{} }

// Load implements Storage.
func (s *MemoryStorage) Load() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{
		HardState:      s.hs,
		Snapshot:       s.snap,
		CompactedIndex: s.compIdx,
		CompactedTerm:  s.compTerm,
		Entries:        slices.Clone(s.ents),
	}
	st.Snapshot.Config = s.snap.Config.Clone()
	return st, nil
}

// Save implements Storage.
func (s *MemoryStorage) Save(hs HardState, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(entries) > 0 {
		first := entries[0].Index
		last := s.compIdx + uint64(len(s.ents))
		if first <= s.compIdx {
			return fmt.Errorf("raft: memory storage: append at index %d is at or before the compaction point %d: %w", first, s.compIdx, ErrCompacted)
		}
		if first > last+1 {
			return fmt.Errorf("raft: memory storage: append at index %d leaves a gap after last index %d", first, last)
		}
		for i := 1; i < len(entries); i++ {
			if entries[i].Index != entries[i-1].Index+1 {
				return fmt.Errorf("raft: memory storage: entries are not contiguous at index %d", entries[i].Index)
			}
		}
		s.ents = append(s.ents[:first-s.compIdx-1], entries...)
	}
	s.hs = hs
	return nil
}

// SaveSnapshot implements Storage.
func (s *MemoryStorage) SaveSnapshot(meta SnapshotMeta, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("raft: memory storage: reading snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if meta.Index <= s.snap.Index && s.snap.Index != 0 {
		return fmt.Errorf("raft: memory storage: snapshot at index %d is not newer than stored snapshot at %d", meta.Index, s.snap.Index)
	}
	if t, ok := s.termLocked(meta.Index); !ok || t != meta.Term {
		s.ents = nil
		s.compIdx, s.compTerm = meta.Index, meta.Term
	}
	s.snap = meta
	s.snap.Config = meta.Config.Clone()
	s.snapData = data
	return nil
}

// termLocked returns the term of the stored entry at index i.
func (s *MemoryStorage) termLocked(i uint64) (uint64, bool) {
	if i == s.compIdx {
		return s.compTerm, true
	}
	if i < s.compIdx || i > s.compIdx+uint64(len(s.ents)) {
		return 0, false
	}
	return s.ents[i-s.compIdx-1].Term, true
}

// Snapshot implements Storage.
func (s *MemoryStorage) Snapshot() (SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapData == nil && s.snap.Index == 0 {
		return SnapshotMeta{}, nil, ErrNoSnapshot
	}
	meta := s.snap
	meta.Config = s.snap.Config.Clone()
	return meta, io.NopCloser(bytes.NewReader(s.snapData)), nil
}

// Compact implements Storage.
func (s *MemoryStorage) Compact(index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.compIdx {
		return nil
	}
	last := s.compIdx + uint64(len(s.ents))
	if index > last {
		return fmt.Errorf("raft: memory storage: compact to %d beyond last index %d", index, last)
	}
	if index > s.snap.Index {
		return fmt.Errorf("raft: memory storage: compact to %d beyond snapshot index %d", index, s.snap.Index)
	}
	n := index - s.compIdx
	s.compTerm = s.ents[n-1].Term
	s.compIdx = index
	s.ents = append(make([]Entry, 0, len(s.ents)), s.ents[n:]...) // keep the capacity
	return nil
}
