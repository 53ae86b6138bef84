package rafttest

import (
	"fmt"
	"reflect"

	"github.com/raftgo/raft"
)

// Violation is a failed check: a safety property broken, a replica that
// diverged, or a cluster that did not recover in time. Runs with the same
// Options reproduce it.
type Violation struct {
	Seed  uint64
	Nodes int
	// Tick is the simulated tick at which the check failed.
	Tick int
	// Check names the property: "election safety", "leader append-only",
	// "log matching", "leader completeness", "state machine safety",
	// "commit quorum", "commit monotonicity", "durability", "apply
	// order", "determinism", "membership", "convergence", "liveness" or
	// "storage".
	Check  string
	Detail string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("rafttest: seed %d (%d nodes), tick %d: %s: %s", v.Seed, v.Nodes, v.Tick, v.Check, v.Detail)
}

// IsLiveness reports whether the violation is a liveness failure rather
// than a broken safety property.
func (v *Violation) IsLiveness() bool { return v.Check == "liveness" }

type entryID struct{ index, term uint64 }

// leadership is a node in one of its incarnations (starts).
type leadership struct {
	node        raft.NodeID
	incarnation int
}

// committedEntry is what the cluster knows about a committed index.
type committedEntry struct {
	term  uint64 // the entry's term
	chain uint64 // hash of the log up to and including it
}

// commitSegment records that indexes (prev segment's last, last] were first
// seen committed by a node in term commitTerm.
type commitSegment struct {
	last       uint64
	commitTerm uint64
}

type appliedEntry struct {
	term uint64
	typ  raft.EntryType
	data uint64 // hash of the data
	set  bool
}

// checker holds the cluster-wide records the invariants are checked
// against.
type checker struct {
	leaders   map[uint64]leadership // term -> its leader
	chains    map[entryID]uint64    // every entry ever in a log -> its chain hash
	committed []committedEntry      // by index; [0] unused
	segments  []commitSegment
	applied   []appliedEntry // by index
	results   []any          // Apply result by index
	hasResult []bool
	snaps     map[uint64]uint64 // snapshot index -> hash of its bytes
	// configs holds every configuration entry ever in a log; conf is the
	// latest committed configuration and confIndex its index.
	configs   map[entryID]raft.Configuration
	conf      raft.Configuration
	confIndex uint64
}

func newChecker() *checker {
	return &checker{
		leaders:   make(map[uint64]leadership),
		chains:    make(map[entryID]uint64),
		committed: make([]committedEntry, 1),
		snaps:     make(map[uint64]uint64),
		configs:   make(map[entryID]raft.Configuration),
	}
}

func (k *checker) commitMax() uint64 { return uint64(len(k.committed) - 1) }

// lastCommittedBefore returns the highest index first committed in a term
// lower than term.
func (k *checker) lastCommittedBefore(term uint64) uint64 {
	for i := len(k.segments) - 1; i >= 0; i-- {
		if k.segments[i].commitTerm < term {
			return k.segments[i].last
		}
	}
	return 0
}

// mirror is the simulator's copy of a node's log (what its Core holds,
// durable or not): the term and chain hash of every entry after offset.
type mirror struct {
	offset      uint64
	offsetTerm  uint64
	offsetChain uint64
	ents        []mirrorEntry // ents[i] is index offset+1+i
}

type mirrorEntry struct{ term, chain uint64 }

func (m *mirror) last() uint64 { return m.offset + uint64(len(m.ents)) }

func (m *mirror) at(i uint64) (term, chain uint64, ok bool) {
	if i == m.offset {
		return m.offsetTerm, m.offsetChain, true
	}
	if i < m.offset || i > m.last() {
		return 0, 0, false
	}
	e := m.ents[i-m.offset-1]
	return e.term, e.chain, true
}

func (m *mirror) reset(index, term, chain uint64) {
	m.offset, m.offsetTerm, m.offsetChain = index, term, chain
	m.ents = m.ents[:0]
}

func (m *mirror) truncate(last uint64) {
	if last < m.last() && last >= m.offset {
		m.ents = m.ents[:last-m.offset]
	}
}

func (m *mirror) compact(to uint64) {
	if to <= m.offset || to > m.last() {
		return
	}
	t, ch, _ := m.at(to)
	n := to - m.offset
	m.ents = append(m.ents[:0], m.ents[n:]...)
	m.offset, m.offsetTerm, m.offsetChain = to, t, ch
}

// Hashing: FNV-1a for data, a 64-bit mixer for the chain.

func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func mix(h, v uint64) uint64 {
	h ^= v + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return h
}

func chainHash(prev uint64, e *raft.Entry) uint64 {
	h := mix(prev, e.Index)
	h = mix(h, e.Term)
	h = mix(h, uint64(e.Type))
	return mix(h, hashBytes(e.Data))
}

// resultsEqual compares two Apply results.
func resultsEqual(a, b any) bool {
	if ab, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && string(ab) == string(bb)
	}
	return reflect.DeepEqual(a, b)
}
