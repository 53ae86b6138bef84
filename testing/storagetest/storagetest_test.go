package storagetest

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/raftgo/raft"
)

func TestMemoryStoragePasses(t *testing.T) {
	Run(t, func(*testing.T) raft.Storage { return raft.NewMemoryStorage() })
}

// bug names a deliberate fault in sliceStorage.
type bug int

const (
	noBug bug = iota
	keepsStaleSuffix
	acceptsGap
	acceptsCompacted
	dropsHardStateWithEntries
	compactOffByOne
	compactForgetsTerm
	compactKeepsEntries
	snapshotAlwaysKeepsLog
	snapshotAlwaysDiscardsLog
	acceptsOlderSnapshot
	noErrNoSnapshot
	storesPartialSnapshot
	panicsCompactingBeyondLog
	forgetsHardStateOnReopen
	loadReturnsTornSnapshot
)

// sliceStorage is a small, straightforward raft.Storage with one optional
// deliberate bug, so the tests can check that the suite notices it.
type sliceStorage struct {
	bug bug

	mu       sync.Mutex
	hs       raft.HardState
	snap     raft.SnapshotMeta
	snapData []byte
	hasSnap  bool
	comp     uint64
	compTerm uint64
	ents     []raft.Entry
}

func (s *sliceStorage) last() uint64 { return s.comp + uint64(len(s.ents)) }

func (s *sliceStorage) Load() (raft.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return raft.State{HardState: s.hs, Snapshot: s.snap, CompactedIndex: s.comp, CompactedTerm: s.compTerm, Entries: slices.Clone(s.ents)}, nil
}

func (s *sliceStorage) Save(hs raft.HardState, ents []raft.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ents) > 0 {
		first := ents[0].Index
		if first <= s.comp && s.bug != acceptsCompacted {
			return fmt.Errorf("compacted")
		}
		if first > s.last()+1 && s.bug != acceptsGap {
			return fmt.Errorf("gap")
		}
		for i := 1; i < len(ents); i++ {
			if ents[i].Index != ents[i-1].Index+1 {
				return fmt.Errorf("not consecutive")
			}
		}
		switch {
		case first > s.last()+1:
			s.ents = append(s.ents, ents...)
		case first <= s.comp:
			s.ents = slices.Clone(ents[s.comp+1-first:])
		case s.bug == keepsStaleSuffix:
			for _, e := range ents {
				if p := e.Index - s.comp - 1; p < uint64(len(s.ents)) {
					s.ents[p] = e
				} else {
					s.ents = append(s.ents, e)
				}
			}
		default:
			s.ents = append(s.ents[:first-s.comp-1], ents...)
		}
		if s.bug == dropsHardStateWithEntries {
			return nil
		}
	}
	s.hs = hs
	return nil
}

func (s *sliceStorage) term(i uint64) (uint64, bool) {
	if i == s.comp {
		return s.compTerm, true
	}
	if i < s.comp || i > s.last() {
		return 0, false
	}
	return s.ents[i-s.comp-1].Term, true
}

func (s *sliceStorage) SaveSnapshot(m raft.SnapshotMeta, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil && s.bug != storesPartialSnapshot {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap && m.Index <= s.snap.Index && s.bug != acceptsOlderSnapshot {
		return fmt.Errorf("not newer")
	}
	t, ok := s.term(m.Index)
	keep := ok && t == m.Term
	switch s.bug {
	case snapshotAlwaysKeepsLog:
		keep = true
	case snapshotAlwaysDiscardsLog:
		keep = false
	}
	if !keep {
		s.ents, s.comp, s.compTerm = nil, m.Index, m.Term
	}
	s.snap, s.snapData, s.hasSnap = m, data, true
	return nil
}

func (s *sliceStorage) Snapshot() (raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasSnap {
		if s.bug == noErrNoSnapshot {
			return raft.SnapshotMeta{}, io.NopCloser(bytes.NewReader(nil)), nil
		}
		return raft.SnapshotMeta{}, nil, raft.ErrNoSnapshot
	}
	data := s.snapData
	if s.bug == loadReturnsTornSnapshot && len(data) > 1 {
		data = data[:len(data)/2]
	}
	return s.snap, io.NopCloser(bytes.NewReader(data)), nil
}

func (s *sliceStorage) Compact(i uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i <= s.comp {
		return nil
	}
	if i > s.last() && s.bug == panicsCompactingBeyondLog {
		_ = s.ents[i-s.comp-1] // out of range
	}
	if i > s.last() || i > s.snap.Index {
		return fmt.Errorf("out of bounds")
	}
	if s.bug == compactOffByOne {
		i--
		if i <= s.comp {
			return nil
		}
	}
	n := i - s.comp
	s.compTerm = s.ents[n-1].Term
	if s.bug == compactForgetsTerm {
		s.compTerm = 0
	}
	s.comp = i
	if s.bug != compactKeepsEntries {
		s.ents = slices.Clone(s.ents[n:])
	}
	return nil
}

// reopenable wraps a sliceStorage as a durable storage: Reopen returns a
// storage with the same contents (or, with forgetsHardStateOnReopen, with
// the hard state lost).
type reopenable struct{ *sliceStorage }

func (r reopenable) Reopen() (raft.Storage, error) {
	s := r.sliceStorage
	s.mu.Lock()
	defer s.mu.Unlock()
	n := &sliceStorage{bug: s.bug, hs: s.hs, snap: s.snap, snapData: s.snapData, hasSnap: s.hasSnap, comp: s.comp, compTerm: s.compTerm, ents: slices.Clone(s.ents)}
	if s.bug == forgetsHardStateOnReopen {
		n.hs = raft.HardState{}
	}
	return reopenable{n}, nil
}

// failures runs the whole suite on newStorage and returns the failures by
// case name.
func failures(newStorage func() raft.Storage) map[string][]string {
	out := map[string][]string{}
	for _, tc := range cases {
		if res := runCase(tc, newStorage); len(res.failures) > 0 {
			out[tc.name] = res.failures
		}
	}
	return out
}

func TestSliceStorageWithoutBugsPasses(t *testing.T) {
	for _, durable := range []bool{false, true} {
		got := failures(func() raft.Storage {
			if durable {
				return reopenable{&sliceStorage{}}
			}
			return &sliceStorage{}
		})
		for name, fs := range got {
			t.Errorf("durable=%v: case %s failed on a correct storage:\n%s", durable, name, strings.Join(fs, "\n"))
		}
	}
}

// TestSuiteCatchesBrokenStorages checks the checker: each deliberately
// broken storage must be reported by the case whose contract it breaks.
func TestSuiteCatchesBrokenStorages(t *testing.T) {
	tests := []struct {
		bug      bug
		durable  bool
		caughtBy []string // every one of these cases must report it
	}{
		{keepsStaleSuffix, false, []string{"OverwriteSuffix", "RandomOperations"}},
		{acceptsGap, false, []string{"RejectGap", "CompactAll"}},
		{acceptsCompacted, false, []string{"RejectCompacted", "SnapshotBeyondLog"}},
		{dropsHardStateWithEntries, false, []string{"HardStateWithEntries", "ConcurrentUse"}},
		{compactOffByOne, false, []string{"Compact", "CompactAll"}},
		{compactForgetsTerm, false, []string{"Compact", "ConcurrentUse"}},
		{compactKeepsEntries, false, []string{"Compact"}},
		{snapshotAlwaysKeepsLog, false, []string{"SnapshotDiscardsConflictingLog", "SnapshotBeyondLog"}},
		{snapshotAlwaysDiscardsLog, false, []string{"SnapshotKeepsMatchingLog", "Compact"}},
		{acceptsOlderSnapshot, false, []string{"SnapshotNotNewer"}},
		{noErrNoSnapshot, false, []string{"FreshIsEmpty"}},
		{storesPartialSnapshot, false, []string{"SnapshotReaderError"}},
		{panicsCompactingBeyondLog, false, []string{"CompactBounds"}},
		{forgetsHardStateOnReopen, true, []string{"HardState", "HardStateWithEntries"}},
		{loadReturnsTornSnapshot, false, []string{"SnapshotRoundTrip", "ConcurrentUse"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("bug%d", tt.bug), func(t *testing.T) {
			got := failures(func() raft.Storage {
				s := &sliceStorage{bug: tt.bug}
				if tt.durable {
					return reopenable{s}
				}
				return s
			})
			for _, name := range tt.caughtBy {
				if len(got[name]) == 0 {
					t.Errorf("case %s did not report bug %d; failures seen: %v", name, tt.bug, keys(got))
				}
			}
			if tt.bug == panicsCompactingBeyondLog && !strings.Contains(strings.Join(got["CompactBounds"], "\n"), "panic") {
				t.Errorf("a panicking storage was not reported as a panic: %v", got["CompactBounds"])
			}
		})
	}
}

// TestFailureMessageNamesTheProblem checks that a failure says what was
// wrong, not just that something was.
func TestFailureMessageNamesTheProblem(t *testing.T) {
	res := runCase(cases[0], func() raft.Storage { return &sliceStorage{bug: noErrNoSnapshot} })
	if len(res.failures) == 0 || !strings.Contains(res.failures[0], "ErrNoSnapshot") {
		t.Fatalf("failures = %q, want one naming ErrNoSnapshot", res.failures)
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
