package raft

import "fmt"

// EntryType says what a log entry carries.
type EntryType uint8

const (
	// EntryNormal carries an application command for the StateMachine.
	EntryNormal EntryType = iota
	// EntryNoop is appended by a new leader to commit entries of earlier
	// terms (Raft paper, section 5.4.2). It is not given to the StateMachine.
	EntryNoop
	// EntryConfig carries an encoded Configuration.
	EntryConfig
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "normal"
	case EntryNoop:
		return "noop"
	case EntryConfig:
		return "config"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Index uint64
	Term  uint64
	Type  EntryType
	Data  []byte
}

// raftLog is the in-memory view of a node's log: every entry after the
// compaction point, the ones already durable and the ones not yet written.
//
// Invariants:
//   - entries[i].Index == offset+1+i (no gaps);
//   - offset <= committed <= lastIndex() (committed entries are never lost);
//   - offset <= stable <= lastIndex();
//   - applied <= committed (applied counts entries handed out to apply);
//   - unstable > stable; entries with index >= unstable have not yet been
//     handed out to be persisted.
type raftLog struct {
	offset     uint64 // index of the last compacted entry (the log's "zero")
	offsetTerm uint64 // term of the entry at offset
	entries    []Entry

	committed uint64 // highest index known to be committed
	applied   uint64 // highest index handed out in Ready.CommittedEntries
	stable    uint64 // highest index known durable on this node
	unstable  uint64 // first index not yet handed out for persistence
}

func newRaftLog(st State) *raftLog {
	l := &raftLog{offset: st.CompactedIndex, offsetTerm: st.CompactedTerm}
	if len(st.Entries) == 0 && st.Snapshot.Index > l.offset {
		l.offset, l.offsetTerm = st.Snapshot.Index, st.Snapshot.Term
	}
	l.entries = append([]Entry(nil), st.Entries...)
	l.stable = l.lastIndex()
	l.unstable = l.stable + 1
	l.committed = max(st.HardState.Commit, st.Snapshot.Index)
	if l.committed > l.lastIndex() {
		l.committed = l.lastIndex()
	}
	l.applied = st.Snapshot.Index
	if l.applied < l.offset {
		l.applied = l.offset
	}
	return l
}

func (l *raftLog) firstIndex() uint64 { return l.offset + 1 }

func (l *raftLog) lastIndex() uint64 { return l.offset + uint64(len(l.entries)) }

func (l *raftLog) lastTerm() uint64 { t, _ := l.term(l.lastIndex()); return t }

// term returns the term of the entry at i, and false if i is compacted or
// beyond the last entry.
func (l *raftLog) term(i uint64) (uint64, bool) {
	if i == l.offset {
		return l.offsetTerm, true
	}
	if i < l.offset || i > l.lastIndex() {
		return 0, false
	}
	return l.entries[i-l.offset-1].Term, true
}

func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, ok := l.term(i)
	return ok && lt == t
}

// entry returns the entry at i, which must be in (offset, lastIndex].
func (l *raftLog) entry(i uint64) *Entry { return &l.entries[i-l.offset-1] }

// slice returns entries [lo, hi) limited to about maxBytes of data (at least
// one entry). lo must be > offset.
func (l *raftLog) slice(lo, hi uint64, maxBytes int) []Entry {
	if lo > hi || lo <= l.offset {
		return nil
	}
	hi = min(hi, l.lastIndex()+1)
	ents := l.entries[lo-l.offset-1 : hi-l.offset-1]
	if maxBytes > 0 {
		size := 0
		for i := range ents {
			size += len(ents[i].Data) + 24
			if size > maxBytes && i > 0 {
				return ents[:i:i]
			}
		}
	}
	return ents[:len(ents):len(ents)]
}

// isUpToDate reports whether a log ending at (lastIdx, lastTerm) is at least
// as up-to-date as this one (Raft paper, section 5.4.1).
func (l *raftLog) isUpToDate(lastIdx, lastTerm uint64) bool {
	mt := l.lastTerm()
	return lastTerm > mt || (lastTerm == mt && lastIdx >= l.lastIndex())
}

// append adds entries at the end of the log. The caller ensures
// ents[0].Index == lastIndex()+1.
func (l *raftLog) append(ents ...Entry) {
	l.entries = append(l.entries, ents...)
}

// truncateFrom discards entries with index >= i.
func (l *raftLog) truncateFrom(i uint64) {
	if i <= l.offset || i > l.lastIndex() {
		return
	}
	// Messages and Readys already handed out share this backing array
	// (and may still be in flight or being written): never write over
	// it. Capping the capacity makes the next append copy to a new array.
	n := i - l.offset - 1
	l.entries = l.entries[:n:n]
	l.unstable = min(l.unstable, i)
	l.stable = min(l.stable, i-1)
}

// findConflict returns the index of the first entry of ents that is not
// already in the log with the same term, or 0 if all are.
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// conflictHint returns the rejection hint for an AppendEntries whose
// previous entry at index does not match: the term of our entry at index (or
// at our last index if index is beyond it) and the first index of that term
// in our log. A leader uses it to skip a whole term per round trip.
func (l *raftLog) conflictHint(index uint64) (hintIndex, hintTerm uint64) {
	if index > l.lastIndex() {
		return l.lastIndex() + 1, 0
	}
	t, ok := l.term(index)
	if !ok {
		return l.offset + 1, 0
	}
	i := index
	for i > l.offset+1 {
		pt, _ := l.term(i - 1)
		if pt != t {
			break
		}
		i--
	}
	return i, t
}

// lastIndexOfTerm returns the highest index whose entry has term t and is
// <= limit, or 0 if there is none in memory.
func (l *raftLog) lastIndexOfTerm(t, limit uint64) uint64 {
	for i := min(limit, l.lastIndex()); i > l.offset; i-- {
		et := l.entry(i).Term
		if et == t {
			return i
		}
		if et < t {
			return 0
		}
	}
	return 0
}

// unstableEntries returns the entries not yet handed out for persistence.
func (l *raftLog) unstableEntries() []Entry {
	if l.unstable > l.lastIndex() {
		return nil
	}
	ents := l.entries[l.unstable-l.offset-1:]
	return ents[:len(ents):len(ents)] // a Storage appending to it must copy
}

// applyLimit is the highest index that may be handed out to apply: it must
// be committed and durable on this node, so a state machine never runs
// ahead of the node's own log (a follower can learn that an entry committed
// before its own write of that entry finishes).
func (l *raftLog) applyLimit() uint64 { return min(l.committed, l.stable) }

// nextCommitted returns committed, locally durable entries not yet handed
// out to apply, limited to about maxBytes.
func (l *raftLog) nextCommitted(maxBytes int) []Entry {
	limit := l.applyLimit()
	if l.applied >= limit {
		return nil
	}
	return l.slice(l.applied+1, limit+1, maxBytes)
}

// commitTo raises committed to i if that is higher.
func (l *raftLog) commitTo(i uint64) bool {
	if i > l.committed && i <= l.lastIndex() {
		l.committed = i
		return true
	}
	return false
}

// stableTo records that entries up to (i, t) are durable, unless the entry
// at i has since been replaced.
func (l *raftLog) stableTo(i, t uint64) {
	if l.matchTerm(i, t) && i > l.stable {
		l.stable = i
	}
}

// compact drops entries up to and including i from memory. i must not
// exceed applied or stable.
func (l *raftLog) compact(i uint64) error {
	if i <= l.offset {
		return nil
	}
	if i > l.applied || i > l.stable {
		return fmt.Errorf("raft: cannot compact to %d beyond applied %d / stable %d", i, l.applied, l.stable)
	}
	t, _ := l.term(i)
	n := i - l.offset
	// Keep the capacity: the log grows back to this size before the next
	// compaction, and regrowing it by doubling costs more than it saves.
	rest := make([]Entry, len(l.entries)-int(n), len(l.entries))
	copy(rest, l.entries[n:])
	l.entries = rest
	l.offset, l.offsetTerm = i, t
	return nil
}

// restore resets the log to start after a snapshot at (index, term).
func (l *raftLog) restore(index, term uint64) {
	l.entries = nil
	l.offset, l.offsetTerm = index, term
	l.committed, l.applied = index, index
	l.stable = index
	l.unstable = index + 1
}
