package raft

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func memEntries(first uint64, terms ...uint64) []Entry {
	out := make([]Entry, len(terms))
	for i, t := range terms {
		out[i] = Entry{Index: first + uint64(i), Term: t, Data: []byte{byte(first) + byte(i)}}
	}
	return out
}

func entryIndexes(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Index
	}
	return out
}

func mustLoad(t *testing.T, s *MemoryStorage) State {
	t.Helper()
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMemoryStorageZeroValueIsEmpty(t *testing.T) {
	var s MemoryStorage
	st := mustLoad(t, &s)
	if !st.HardState.IsZero() || len(st.Entries) != 0 || st.Snapshot.Index != 0 || st.CompactedIndex != 0 {
		t.Fatalf("zero MemoryStorage loaded %+v", st)
	}
	if _, _, err := s.Snapshot(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Snapshot on empty storage: %v, want ErrNoSnapshot", err)
	}
}

func TestMemoryStorageSaveAndLoad(t *testing.T) {
	s := NewMemoryStorage()
	hs := HardState{Term: 3, Vote: 2, Commit: 2}
	if err := s.Save(hs, memEntries(1, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	st := mustLoad(t, s)
	if st.HardState != hs || len(st.Entries) != 3 || st.Entries[2].Term != 3 {
		t.Fatalf("loaded %+v", st)
	}
	// A hard state alone can be saved.
	if err := s.Save(HardState{Term: 4, Commit: 3}, nil); err != nil {
		t.Fatal(err)
	}
	if st := mustLoad(t, s); st.HardState.Term != 4 || st.HardState.Vote != None || len(st.Entries) != 3 {
		t.Fatalf("after hard-state-only save: %+v", st)
	}
	// Load hands out a copy: changing it does not change the storage.
	st = mustLoad(t, s)
	st.Entries[0].Term = 99
	st.Entries = append(st.Entries[:1], Entry{Index: 2, Term: 42})
	if got := mustLoad(t, s); got.Entries[0].Term != 1 || got.Entries[1].Term != 2 {
		t.Fatalf("Load result aliases storage: %+v", got.Entries)
	}
}

func TestMemoryStorageSaveTruncatesConflictingSuffix(t *testing.T) {
	s := NewMemoryStorage()
	if err := s.Save(HardState{Term: 2}, memEntries(1, 1, 1, 2, 2, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(HardState{Term: 3}, memEntries(3, 3)); err != nil {
		t.Fatal(err)
	}
	st := mustLoad(t, s)
	if got := entryIndexes(st.Entries); len(got) != 3 || st.Entries[2].Term != 3 {
		t.Fatalf("after overwrite at 3: %v (terms %+v)", got, st.Entries)
	}
	// Appending right after the end extends it.
	if err := s.Save(HardState{Term: 3}, memEntries(4, 3, 3)); err != nil {
		t.Fatal(err)
	}
	if st := mustLoad(t, s); len(st.Entries) != 5 {
		t.Fatalf("after append: %v", entryIndexes(st.Entries))
	}
}

func TestMemoryStorageSaveRejectsBadBatches(t *testing.T) {
	cases := []struct {
		name    string
		entries []Entry
		wantIs  error
		wantMsg string
	}{
		{"gap after the last entry", memEntries(5, 1), nil, "gap"},
		{"not contiguous", []Entry{{Index: 3, Term: 1}, {Index: 5, Term: 1}}, nil, "contiguous"},
		{"at the compaction point", memEntries(2, 1), ErrCompacted, "compaction point"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewMemoryStorage()
			if err := s.Save(HardState{Term: 1}, memEntries(1, 1, 1)); err != nil {
				t.Fatal(err)
			}
			if err := s.SaveSnapshot(SnapshotMeta{Index: 2, Term: 1}, strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(2); err != nil {
				t.Fatal(err)
			}
			before := mustLoad(t, s)
			err := s.Save(HardState{Term: 9}, c.entries)
			if err == nil || !strings.Contains(err.Error(), c.wantMsg) || (c.wantIs != nil && !errors.Is(err, c.wantIs)) {
				t.Fatalf("Save: %v, want an error about %q", err, c.wantMsg)
			}
			after := mustLoad(t, s)
			if after.HardState != before.HardState || len(after.Entries) != len(before.Entries) {
				t.Fatalf("a rejected Save changed the storage: %+v -> %+v", before, after)
			}
		})
	}
}

func TestMemoryStorageSnapshot(t *testing.T) {
	conf := Configuration{Servers: []Server{{ID: 1}, {ID: 2, Suffrage: Learner}}}
	t.Run("matching term keeps the entries after it", func(t *testing.T) {
		s := NewMemoryStorage()
		if err := s.Save(HardState{Term: 2}, memEntries(1, 1, 1, 2, 2)); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveSnapshot(SnapshotMeta{Index: 3, Term: 2, Config: conf}, strings.NewReader("state@3")); err != nil {
			t.Fatal(err)
		}
		st := mustLoad(t, s)
		if st.Snapshot.Index != 3 || len(st.Entries) != 4 || st.CompactedIndex != 0 {
			t.Fatalf("after snapshot: %+v", st)
		}
		meta, rc, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if meta.Index != 3 || meta.Term != 2 || string(data) != "state@3" || len(meta.Config.Servers) != 2 {
			t.Fatalf("Snapshot() = %+v %q", meta, data)
		}
		// The returned config is a copy.
		meta.Config.Servers[0].ID = 77
		if m2, rc2, _ := s.Snapshot(); m2.Config.Servers[0].ID != 1 {
			t.Fatal("Snapshot config aliases storage")
		} else {
			rc2.Close()
		}
		if err := s.Compact(3); err != nil {
			t.Fatal(err)
		}
		st = mustLoad(t, s)
		if st.CompactedIndex != 3 || st.CompactedTerm != 2 || len(st.Entries) != 1 || st.Entries[0].Index != 4 {
			t.Fatalf("after compact: %+v", st)
		}
	})
	t.Run("mismatching term discards the log", func(t *testing.T) {
		s := NewMemoryStorage()
		if err := s.Save(HardState{Term: 2}, memEntries(1, 1, 1, 2)); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveSnapshot(SnapshotMeta{Index: 10, Term: 5, Config: conf}, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		st := mustLoad(t, s)
		if len(st.Entries) != 0 || st.CompactedIndex != 10 || st.CompactedTerm != 5 {
			t.Fatalf("after snapshot past the log: %+v", st)
		}
		// New entries continue after the snapshot.
		if err := s.Save(HardState{Term: 5}, memEntries(11, 5)); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(HardState{Term: 5}, memEntries(10, 5)); !errors.Is(err, ErrCompacted) {
			t.Fatalf("append at the snapshot index: %v, want ErrCompacted", err)
		}
	})
	t.Run("older snapshot is refused", func(t *testing.T) {
		s := NewMemoryStorage()
		if err := s.SaveSnapshot(SnapshotMeta{Index: 10, Term: 5}, strings.NewReader("new")); err != nil {
			t.Fatal(err)
		}
		for _, idx := range []uint64{10, 4} {
			if err := s.SaveSnapshot(SnapshotMeta{Index: idx, Term: 5}, strings.NewReader("old")); err == nil {
				t.Fatalf("snapshot at %d accepted over one at 10", idx)
			}
		}
		_, rc, _ := s.Snapshot()
		data, _ := io.ReadAll(rc)
		if string(data) != "new" {
			t.Fatalf("snapshot data replaced by a refused one: %q", data)
		}
	})
	t.Run("reader error is reported and stores nothing", func(t *testing.T) {
		s := NewMemoryStorage()
		boom := errors.New("boom")
		err := s.SaveSnapshot(SnapshotMeta{Index: 3, Term: 1}, io.MultiReader(strings.NewReader("abc"), errReader{boom}))
		if !errors.Is(err, boom) {
			t.Fatalf("SaveSnapshot: %v, want the reader's error", err)
		}
		if _, _, err := s.Snapshot(); !errors.Is(err, ErrNoSnapshot) {
			t.Fatalf("a failed SaveSnapshot left a snapshot: %v", err)
		}
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestMemoryStorageCompactBounds(t *testing.T) {
	s := NewMemoryStorage()
	if err := s.Save(HardState{Term: 1}, memEntries(1, 1, 1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(2); err == nil {
		t.Fatal("compacting past the snapshot index (none) succeeded")
	}
	if err := s.SaveSnapshot(SnapshotMeta{Index: 4, Term: 1}, strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(9); err == nil {
		t.Fatal("compacting beyond the last index succeeded")
	}
	if err := s.Compact(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(1); err != nil {
		t.Fatalf("compacting below the compaction point should be a no-op: %v", err)
	}
	st := mustLoad(t, s)
	if st.CompactedIndex != 2 || len(st.Entries) != 2 || st.Entries[0].Index != 3 {
		t.Fatalf("after compact(2): %+v", st)
	}
}
