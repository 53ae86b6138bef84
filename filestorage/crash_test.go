package filestorage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/raftgo/raft"
)

// scriptOp is one Storage call of a scripted workload.
type scriptOp struct {
	desc  string
	apply func(st raft.Storage) error
}

func saveOp(hs raft.HardState, ents ...raft.Entry) scriptOp {
	return scriptOp{fmt.Sprintf("Save(term %d, %d entries from %d)", hs.Term, len(ents), firstIndex(ents)),
		func(st raft.Storage) error { return st.Save(hs, ents) }}
}

func snapOp(meta raft.SnapshotMeta, data []byte) scriptOp {
	return scriptOp{fmt.Sprintf("SaveSnapshot(%d, term %d)", meta.Index, meta.Term),
		func(st raft.Storage) error { return st.SaveSnapshot(meta, bytes.NewReader(data)) }}
}

func compactOp(i uint64) scriptOp {
	return scriptOp{fmt.Sprintf("Compact(%d)", i), func(st raft.Storage) error { return st.Compact(i) }}
}

func firstIndex(ents []raft.Entry) uint64 {
	if len(ents) == 0 {
		return 0
	}
	return ents[0].Index
}

func testEntries(lo, hi, term uint64, size int) []raft.Entry {
	var out []raft.Entry
	for i := lo; i <= hi; i++ {
		d := make([]byte, size)
		for k := range d {
			d[k] = byte(i*13 + term*7 + uint64(k))
		}
		out = append(out, raft.Entry{Index: i, Term: term, Type: raft.EntryType(i % 3), Data: d})
	}
	return out
}

// crashScript is a workload touching every write path: appends of
// different sizes, hard-state-only saves, suffix overwrites, snapshots that
// keep and that discard the log, compactions, and (with small segments)
// rollovers and segment deletion.
func crashScript() []scriptOp {
	var ops []scriptOp
	last, term := uint64(0), uint64(1)
	ops = append(ops, saveOp(raft.HardState{Term: 1, Vote: 1}))
	for round := range 6 {
		for k := range 4 {
			n := uint64(1 + (round*4+k)%7)
			ops = append(ops, saveOp(raft.HardState{Term: term, Vote: 1, Commit: last}, testEntries(last+1, last+n, term, 20+k*15)...))
			last += n
		}
		// A new leader overwrites the last two entries.
		term++
		ops = append(ops, saveOp(raft.HardState{Term: term, Vote: 2, Commit: last - 2}))
		ops = append(ops, saveOp(raft.HardState{Term: term, Vote: 2, Commit: last - 2}, testEntries(last-1, last-1, term, 40)...))
		last--
		switch round {
		case 1, 3:
			si := last - 2
			ops = append(ops, snapOp(raft.SnapshotMeta{Index: si, Term: term - 1, Config: raft.Configuration{Servers: []raft.Server{{ID: 1}, {ID: 2}}}}, bytes.Repeat([]byte{byte(round)}, 300)))
			ops = append(ops, compactOp(si-1))
		case 4:
			// A snapshot from a leader, past our log: discards it.
			last += 10
			ops = append(ops, snapOp(raft.SnapshotMeta{Index: last, Term: term}, bytes.Repeat([]byte{9}, 500)))
		}
	}
	// One large entry makes a long segment. Once it is dead, its file is
	// written again by a shorter segment, past whose end lie the records
	// of its previous life, and which rolls over in turn.
	small := func(k int) {
		for range k {
			ops = append(ops, saveOp(raft.HardState{Term: term, Vote: 2, Commit: last}, testEntries(last+1, last+2, term, 60)...))
			last += 2
		}
	}
	ops = append(ops, saveOp(raft.HardState{Term: term, Vote: 2, Commit: last}, testEntries(last+1, last+1, term, 1500)...))
	last++
	small(8)
	ops = append(ops, snapOp(raft.SnapshotMeta{Index: last - 1, Term: term}, bytes.Repeat([]byte{7}, 200)))
	ops = append(ops, compactOp(last-2))
	small(12)
	return ops
}

// modelAfter returns the state a correct storage holds after the first n
// ops, with its snapshot data.
func modelAfter(t *testing.T, ops []scriptOp, n int) (raft.State, []byte) {
	t.Helper()
	m := raft.NewMemoryStorage()
	for _, op := range ops[:n] {
		if err := op.apply(m); err != nil {
			t.Fatalf("script is invalid: %s: %v", op.desc, err)
		}
	}
	st, _ := m.Load()
	return st, snapshotBytes(t, m)
}

func snapshotBytes(t *testing.T, st raft.Storage) []byte {
	t.Helper()
	_, rc, err := st.Snapshot()
	if errors.Is(err, raft.ErrNoSnapshot) {
		return nil
	}
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading snapshot: %v", err)
	}
	return b
}

func statesEqual(a, b raft.State) bool {
	if a.HardState != b.HardState || a.CompactedIndex != b.CompactedIndex || a.CompactedTerm != b.CompactedTerm ||
		a.Snapshot.Index != b.Snapshot.Index || a.Snapshot.Term != b.Snapshot.Term ||
		fmt.Sprint(a.Snapshot.Config.Servers) != fmt.Sprint(b.Snapshot.Config.Servers) || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
			return false
		}
	}
	return true
}

func describe(st raft.State) string {
	last := st.CompactedIndex + uint64(len(st.Entries))
	return fmt.Sprintf("{hs %+v, snapshot %d/%d, compacted %d/%d, entries %d..%d}", st.HardState, st.Snapshot.Index, st.Snapshot.Term, st.CompactedIndex, st.CompactedTerm, st.CompactedIndex+1, last)
}

const crashDir = "/data"

// TestCrashAtEveryOperation kills the machine at every mutating file
// operation of the scripted workload (under three models of what unsynced
// data survives), restarts, and checks that the storage opens and holds
// exactly the state after the last acknowledged call, or after the call in
// flight: every acknowledged write is there and nothing half-written is.
// It then crashes again at every step of that recovery.
func TestCrashAtEveryOperation(t *testing.T) {
	ops := crashScript()
	opts := Options{SegmentSize: 700}
	models := make([]struct {
		st   raft.State
		data []byte
	}, len(ops)+1)
	for n := range models {
		models[n].st, models[n].data = modelAfter(t, ops, n)
	}
	// How many operations does the whole workload take?
	total := func() int {
		fsys := newMemFS()
		s, err := open(fsys, crashDir, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if err := op.apply(s); err != nil {
				t.Fatalf("%s: %v", op.desc, err)
			}
		}
		if st, _ := s.Load(); !statesEqual(st, models[len(ops)].st) {
			t.Fatalf("without crashes: got %s, want %s", describe(st), describe(models[len(ops)].st))
		}
		return fsys.ops
	}()
	t.Logf("the workload makes %d mutating file operations", total)

	checkRecovered := func(t *testing.T, fsys *memFS, done int, what string) *Storage {
		t.Helper()
		s, err := open(fsys, crashDir, opts)
		if err != nil {
			t.Fatalf("%s: open after crash: %v", what, err)
		}
		st, err := s.Load()
		if err != nil {
			t.Fatalf("%s: Load: %v", what, err)
		}
		data := snapshotBytes(t, s)
		ok := false
		for n := done; n <= min(done+1, len(ops)); n++ {
			if statesEqual(st, models[n].st) && bytes.Equal(data, models[n].data) {
				ok = true
			}
		}
		if !ok {
			next := "none"
			if done < len(ops) {
				next = ops[done].desc + " -> " + describe(models[done+1].st)
			}
			t.Fatalf("%s: recovered %s; want the state after %d acknowledged calls %s, or after the call in flight (%s)",
				what, describe(st), done, describe(models[done].st), next)
		}
		return s
	}

	runs := 0
	for failAt := 1; failAt <= total; failAt++ {
		for model := range crashModels {
			rng := rand.New(rand.NewPCG(uint64(failAt), uint64(model)))
			fsys := newMemFS()
			fsys.failAt = failAt
			fsys.rng = rng
			done := 0
			if s, err := open(fsys, crashDir, opts); err == nil {
				for _, op := range ops {
					if op.apply(s) != nil {
						break
					}
					done++
				}
			}
			if !fsys.crashed {
				t.Fatalf("failAt %d: the workload did not reach its failure point", failAt)
			}
			what := fmt.Sprintf("crash at op %d (model %d) during call %d", failAt, model, done)
			img := fsys.crash(crashModel(model), rng)

			// Crash again at every step of the recovery itself.
			for recFail := 1; ; recFail++ {
				again := img.clone()
				again.failAt = recFail
				s, err := open(again, crashDir, opts)
				if err == nil && !again.crashed {
					s.Close()
					break
				}
				img2 := again.crash(crashModel(model), rng)
				s = checkRecovered(t, img2, done, fmt.Sprintf("%s, then crash at recovery op %d", what, recFail))
				s.Close()
				runs++
			}

			s := checkRecovered(t, img, done, what)
			runs++
			// The recovered storage must keep working: append, reopen.
			st, _ := s.Load()
			next := st.CompactedIndex + uint64(len(st.Entries)) + 1
			extra := testEntries(next, next+2, st.HardState.Term+1, 33)
			hs := raft.HardState{Term: st.HardState.Term + 1, Vote: 3, Commit: st.HardState.Commit}
			if err := s.Save(hs, extra); err != nil {
				t.Fatalf("%s: Save after recovery: %v", what, err)
			}
			s.Close()
			s, err := open(img, crashDir, opts)
			if err != nil {
				t.Fatalf("%s: reopen after recovery and Save: %v", what, err)
			}
			st2, _ := s.Load()
			if st2.HardState != hs || len(st2.Entries) < 3 || st2.Entries[len(st2.Entries)-1].Index != next+2 {
				t.Fatalf("%s: the Save after recovery was lost: %s", what, describe(st2))
			}
			s.Close()
		}
	}
	t.Logf("checked %d crash images", runs)
}
