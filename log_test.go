package raft

import (
	"slices"
	"testing"
)

// logWith returns a raftLog after a compaction point (offset, offsetTerm)
// holding entries with the given terms, all durable, nothing committed
// beyond offset.
func logWith(offset, offsetTerm uint64, terms ...uint64) *raftLog {
	st := State{CompactedIndex: offset, CompactedTerm: offsetTerm, HardState: HardState{Commit: offset}}
	for i, t := range terms {
		st.Entries = append(st.Entries, Entry{Index: offset + 1 + uint64(i), Term: t, Data: []byte{byte(i)}})
	}
	return newRaftLog(st)
}

func TestLogBoundsAndTerms(t *testing.T) {
	l := logWith(5, 2, 2, 3, 3, 4) // indexes 6..9
	if l.firstIndex() != 6 || l.lastIndex() != 9 || l.lastTerm() != 4 {
		t.Fatalf("first %d last %d lastTerm %d", l.firstIndex(), l.lastIndex(), l.lastTerm())
	}
	cases := []struct {
		i    uint64
		term uint64
		ok   bool
	}{
		{4, 0, false}, // compacted
		{5, 2, true},  // the compaction point keeps its term
		{6, 2, true},
		{7, 3, true},
		{9, 4, true},
		{10, 0, false}, // beyond the end
	}
	for _, c := range cases {
		term, ok := l.term(c.i)
		if term != c.term || ok != c.ok {
			t.Errorf("term(%d) = %d, %t; want %d, %t", c.i, term, ok, c.term, c.ok)
		}
		if got := l.matchTerm(c.i, c.term); got != c.ok {
			t.Errorf("matchTerm(%d, %d) = %t", c.i, c.term, got)
		}
	}
	if l.matchTerm(7, 4) {
		t.Error("matchTerm(7, 4) should be false: entry 7 has term 3")
	}
	empty := newRaftLog(State{})
	if empty.firstIndex() != 1 || empty.lastIndex() != 0 || empty.lastTerm() != 0 {
		t.Fatalf("empty log: first %d last %d", empty.firstIndex(), empty.lastIndex())
	}
	if _, ok := empty.term(1); ok {
		t.Fatal("empty log has a term at 1")
	}
}

func TestLogSlice(t *testing.T) {
	l := logWith(0, 0, 1, 1, 1, 1, 1) // 1..5, 1 byte of data each
	idx := func(es []Entry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Index)
		}
		return out
	}
	cases := []struct {
		name     string
		lo, hi   uint64
		maxBytes int
		want     []uint64
	}{
		{"all", 1, 6, 0, []uint64{1, 2, 3, 4, 5}},
		{"hi clipped to the end", 4, 100, 0, []uint64{4, 5}},
		{"empty range", 3, 3, 0, nil},
		{"inverted range", 4, 3, 0, nil},
		{"size limit", 1, 6, 2 * 25, []uint64{1, 2}},
		{"at least one entry", 2, 6, 1, []uint64{2}},
	}
	for _, c := range cases {
		if got := idx(l.slice(c.lo, c.hi, c.maxBytes)); !slices.Equal(got, c.want) {
			t.Errorf("%s: slice(%d, %d, %d) = %v, want %v", c.name, c.lo, c.hi, c.maxBytes, got, c.want)
		}
	}
	// A slice must not let an append through it overwrite the log.
	s := l.slice(1, 3, 0)
	_ = append(s, Entry{Index: 99})
	if l.entry(3).Index != 3 {
		t.Fatal("appending to a slice overwrote the log")
	}
	c := logWith(3, 1, 2, 2)
	if got := c.slice(3, 6, 0); got != nil {
		t.Fatalf("slice from a compacted index returned %v", got)
	}
}

func TestLogIsUpToDate(t *testing.T) {
	l := logWith(0, 0, 1, 2, 2) // last (3, 2)
	cases := []struct {
		idx, term uint64
		want      bool
	}{
		{3, 2, true},
		{4, 2, true},
		{2, 2, false},
		{1, 3, true},
		{10, 1, false},
	}
	for _, c := range cases {
		if got := l.isUpToDate(c.idx, c.term); got != c.want {
			t.Errorf("isUpToDate(%d, %d) = %t, want %t", c.idx, c.term, got, c.want)
		}
	}
}

func TestLogFindConflictAndTruncate(t *testing.T) {
	l := logWith(0, 0, 1, 2, 2, 3) // 1:1 2:2 3:2 4:3
	ents := func(first uint64, terms ...uint64) []Entry {
		var out []Entry
		for i, t := range terms {
			out = append(out, Entry{Index: first + uint64(i), Term: t})
		}
		return out
	}
	cases := []struct {
		name string
		ents []Entry
		want uint64
	}{
		{"none", nil, 0},
		{"all match", ents(2, 2, 2, 3), 0},
		{"new entries past the end", ents(3, 2, 3, 3, 3), 5},
		{"conflict in the middle", ents(2, 2, 4, 4), 3},
		{"conflict at the first", ents(1, 5), 1},
	}
	for _, c := range cases {
		if got := l.findConflict(c.ents); got != c.want {
			t.Errorf("%s: findConflict = %d, want %d", c.name, got, c.want)
		}
	}

	l.unstable = l.lastIndex() + 1
	l.truncateFrom(3)
	if l.lastIndex() != 2 || l.stable != 2 || l.unstable != 3 {
		t.Fatalf("after truncateFrom(3): last %d stable %d unstable %d", l.lastIndex(), l.stable, l.unstable)
	}
	l.truncateFrom(9) // beyond the end: no-op
	l.truncateFrom(0) // at or before the compaction point: no-op
	if l.lastIndex() != 2 {
		t.Fatalf("out-of-range truncation changed the log: last %d", l.lastIndex())
	}
	l.append(ents(3, 4, 4)...)
	if l.lastIndex() != 4 || l.lastTerm() != 4 || len(l.unstableEntries()) != 2 {
		t.Fatalf("after append: last %d term %d unstable %v", l.lastIndex(), l.lastTerm(), l.unstableEntries())
	}
}

func TestLogConflictHint(t *testing.T) {
	l := logWith(2, 1, 1, 3, 3, 3, 5, 5) // 3:1 4:3 5:3 6:3 7:5 8:5
	cases := []struct {
		index           uint64
		hintIdx, hintTm uint64
	}{
		{8, 7, 5},
		{7, 7, 5},
		{6, 4, 3},
		{4, 4, 3},
		{3, 3, 1},
		{20, 9, 0}, // beyond our log: our last index + 1
		{1, 3, 0},  // compacted: our first index
	}
	for _, c := range cases {
		hi, ht := l.conflictHint(c.index)
		if hi != c.hintIdx || ht != c.hintTm {
			t.Errorf("conflictHint(%d) = (%d, %d), want (%d, %d)", c.index, hi, ht, c.hintIdx, c.hintTm)
		}
	}
	// The first term of the log reaches back to the compaction point.
	m := logWith(2, 1, 1, 1, 2)
	if hi, ht := m.conflictHint(4); hi != 3 || ht != 1 {
		t.Errorf("conflictHint at the start of the log = (%d, %d), want (3, 1)", hi, ht)
	}
}

func TestLogLastIndexOfTerm(t *testing.T) {
	l := logWith(0, 0, 1, 2, 2, 4, 4, 6) // 1:1 2:2 3:2 4:4 5:4 6:6
	cases := []struct {
		term, limit, want uint64
	}{
		{2, 6, 3},
		{4, 6, 5},
		{4, 4, 4},
		{3, 6, 0}, // no entry of term 3
		{6, 5, 0}, // only beyond the limit
		{1, 100, 1},
	}
	for _, c := range cases {
		if got := l.lastIndexOfTerm(c.term, c.limit); got != c.want {
			t.Errorf("lastIndexOfTerm(%d, %d) = %d, want %d", c.term, c.limit, got, c.want)
		}
	}
}

func TestLogCommitApplyStable(t *testing.T) {
	l := logWith(0, 0, 1, 1, 1, 1)
	if l.commitTo(9) {
		t.Fatal("commitTo beyond the last index succeeded")
	}
	if !l.commitTo(3) || l.committed != 3 {
		t.Fatalf("commitTo(3): committed %d", l.committed)
	}
	if l.commitTo(2) || l.committed != 3 {
		t.Fatal("commit index moved backwards")
	}
	if got := l.nextCommitted(0); len(got) != 3 || got[0].Index != 1 {
		t.Fatalf("nextCommitted = %v", got)
	}
	l.applied = 3
	if got := l.nextCommitted(0); got != nil {
		t.Fatalf("nothing left to apply, got %v", got)
	}

	// stableTo ignores an acknowledgement of an entry since replaced.
	u := logWith(0, 0, 1, 1)
	u.append(Entry{Index: 3, Term: 2})
	u.truncateFrom(3)
	u.append(Entry{Index: 3, Term: 3})
	u.stableTo(3, 2)
	if u.stable != 2 {
		t.Fatalf("stableTo accepted a replaced entry: stable %d", u.stable)
	}
	u.stableTo(3, 3)
	if u.stable != 3 {
		t.Fatalf("stable %d, want 3", u.stable)
	}
}

func TestLogCompaction(t *testing.T) {
	l := logWith(0, 0, 1, 1, 2, 2, 3) // 1..5
	l.committed, l.applied = 4, 3
	if err := l.compact(4); err == nil {
		t.Fatal("compacting beyond applied succeeded")
	}
	if err := l.compact(2); err != nil {
		t.Fatal(err)
	}
	if l.firstIndex() != 3 || l.lastIndex() != 5 || l.offsetTerm != 1 {
		t.Fatalf("after compact(2): first %d last %d offsetTerm %d", l.firstIndex(), l.lastIndex(), l.offsetTerm)
	}
	if _, ok := l.term(1); ok {
		t.Fatal("compacted entry still has a term")
	}
	if tm, ok := l.term(2); !ok || tm != 1 {
		t.Fatalf("term at the compaction point = %d, %t", tm, ok)
	}
	if l.entry(3).Term != 2 || l.entry(5).Term != 3 {
		t.Fatal("entries shifted wrongly by compaction")
	}
	if err := l.compact(1); err != nil {
		t.Fatalf("compacting below the offset should be a no-op: %v", err)
	}
	if l.firstIndex() != 3 {
		t.Fatal("compacting below the offset moved the log")
	}
	// A log restarted from a compacted storage keeps the same view.
	r := newRaftLog(State{CompactedIndex: 2, CompactedTerm: 1, HardState: HardState{Commit: 4},
		Entries: []Entry{{Index: 3, Term: 2}, {Index: 4, Term: 2}, {Index: 5, Term: 3}}})
	if r.firstIndex() != 3 || r.lastIndex() != 5 || r.committed != 4 || r.applied != 2 {
		t.Fatalf("restored log: first %d last %d committed %d applied %d", r.firstIndex(), r.lastIndex(), r.committed, r.applied)
	}
}

func TestLogRestoreFromSnapshot(t *testing.T) {
	l := logWith(0, 0, 1, 1, 2)
	l.restore(10, 4)
	if l.firstIndex() != 11 || l.lastIndex() != 10 || l.lastTerm() != 4 || l.committed != 10 || l.applied != 10 {
		t.Fatalf("after restore: first %d last %d lastTerm %d committed %d applied %d",
			l.firstIndex(), l.lastIndex(), l.lastTerm(), l.committed, l.applied)
	}
	if len(l.unstableEntries()) != 0 {
		t.Fatal("restored log has unstable entries")
	}
	// A log loaded with only a snapshot starts after it.
	s := newRaftLog(State{Snapshot: SnapshotMeta{Index: 7, Term: 3}, HardState: HardState{Commit: 7}})
	if s.firstIndex() != 8 || s.lastTerm() != 3 || s.committed != 7 || s.applied != 7 {
		t.Fatalf("snapshot-only log: first %d lastTerm %d committed %d applied %d", s.firstIndex(), s.lastTerm(), s.committed, s.applied)
	}
	// A commit index beyond the stored log (a torn write) is clamped.
	c := newRaftLog(State{HardState: HardState{Commit: 9}, Entries: []Entry{{Index: 1, Term: 1}}})
	if c.committed != 1 {
		t.Fatalf("committed %d beyond the log", c.committed)
	}
}
