package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/raftgo/raft"
)

// cases is the suite. Each contract is one sentence taken from the
// raft.Storage documentation; a case that modifies the storage also checks,
// when the storage is a Reopener, that the result survives a reopen.
var cases = []testCase{
	{
		name:     "FreshIsEmpty",
		contract: "A fresh storage loads the zero State, and Snapshot returns ErrNoSnapshot.",
		check: func(c *checker) {
			h := newHarness(c)
			h.verify("fresh storage")
			h.restart("nothing")
		},
	},
	{
		name:     "HardState",
		contract: "Save with no entries stores the hard state, and the latest Save's hard state is the one loaded.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 0, 0))
			h.verify("Save(term 1)")
			h.save(hs(2, 3, 0))
			h.save(hs(5, 2, 0))
			h.verify("three Saves of hard state")
			h.restart("hard state Saves")
			h.save(hs(6, 0, 0))
			h.verify("Save after reopen")
		},
	},
	{
		name:     "Append",
		contract: "Entries saved in consecutive batches load back in index order with index, term, type and data intact.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 1, 1)...)
			h.save(hs(1, 1, 1), ents(2, 10, 1)...)
			h.verify("appending 1..10")
			h.restart("appending 1..10")
			big := entry(11, 2)
			big.Data = snapData(11, 256<<10)
			h.save(hs(2, 1, 10), big)
			h.save(hs(2, 1, 10), ents(12, 200, 2)...)
			h.verify("appending a 256 KiB entry and 12..200")
			h.restart("appending 11..200")
		},
	},
	{
		name:     "HardStateWithEntries",
		contract: "One Save stores both its hard state and its entries.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(3, 2, 0), ents(1, 5, 3)...)
			h.verify("Save of hard state and entries")
			h.save(hs(4, 1, 4), ents(6, 6, 4)...)
			h.verify("second Save of hard state and entries")
			h.restart("Saves of hard state and entries")
		},
	},
	{
		name:     "OverwriteSuffix",
		contract: "Save whose first entry is at or before the last stored index discards every stored entry from that index on before storing its entries.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.save(hs(2, 2, 0), ents(6, 7, 2)...) // shorter than what it replaces
			h.verify("overwriting 6..10 with 6..7")
			h.restart("overwriting 6..10 with 6..7")
			h.save(hs(2, 2, 0), ents(8, 9, 2)...)
			h.save(hs(3, 3, 0), ents(9, 9, 3)...) // overwrite only the last
			h.verify("overwriting the last entry")
			h.save(hs(4, 4, 0), ents(1, 3, 4)...) // overwrite from the first
			h.verify("overwriting from index 1")
			h.restart("overwriting from index 1")
			h.save(hs(4, 4, 0), ents(4, 6, 4)...)
			h.verify("appending after the overwrite")
		},
	},
	{
		name:     "RejectGap",
		contract: "Save whose first entry would leave a gap after the last stored entry fails and changes nothing.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(2, 3, 1)...) // gap on an empty log
			h.save(hs(1, 1, 0), ents(1, 5, 1)...)
			h.save(hs(9, 9, 9), ents(7, 8, 1)...)
			h.verify("rejected Saves with a gap")
			h.restart("rejected Saves")
		},
	},
	{
		name:     "RejectNonContiguous",
		contract: "Save whose entries are not consecutive indexes fails and changes nothing.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 5, 1)...)
			bad := append(ents(6, 7, 1), ents(9, 9, 1)...)
			h.save(hs(9, 9, 9), bad...)
			h.verify("rejected Save of 6,7,9")
			h.restart("rejected Save")
		},
	},
	{
		name:     "RejectCompacted",
		contract: "Save whose first entry is at or before the compaction point fails and changes nothing.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.saveSnapshot(meta(6, 1, 1), snapData(6, 100))
			h.compact(6)
			h.save(hs(2, 2, 0), ents(6, 8, 2)...)
			h.save(hs(2, 2, 0), ents(3, 8, 2)...)
			h.verify("rejected Saves at or before the compaction point")
			h.restart("rejected Saves")
			h.save(hs(2, 2, 0), ents(7, 8, 2)...)
			h.verify("Save right after the compaction point")
		},
	},
	{
		name:     "Compact",
		contract: "Compact(i) discards the entries up to i, and Load then reports CompactedIndex i, CompactedTerm the term of entry i, and the entries from i+1 on.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 5, 1)...)
			h.save(hs(2, 1, 0), ents(6, 20, 2)...)
			h.saveSnapshot(meta(12, 2, 1, 2, 3), snapData(12, 64))
			h.verify("snapshot that keeps the log")
			h.compact(4)
			h.verify("Compact(4)")
			h.restart("Compact(4)")
			h.compact(12)
			h.verify("Compact(12)")
			h.restart("Compact(12)")
			h.save(hs(2, 1, 15), ents(21, 30, 2)...)
			h.verify("appending after compaction")
			h.restart("appending after compaction")
		},
	},
	{
		name:     "CompactNoop",
		contract: "Compact at or before the compaction point changes nothing.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.compact(0)
			h.saveSnapshot(meta(8, 1, 1), snapData(8, 10))
			h.compact(5)
			h.compact(5)
			h.compact(3)
			h.verify("repeated and backwards Compact")
			h.restart("repeated Compact")
		},
	},
	{
		name:     "CompactBounds",
		contract: "Compact beyond the last stored entry or beyond the latest snapshot's index fails and changes nothing.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.compact(3) // no snapshot yet
			h.saveSnapshot(meta(5, 1, 1), snapData(5, 10))
			h.compact(6)  // beyond the snapshot
			h.compact(11) // beyond the last entry
			h.verify("rejected Compacts")
			h.saveSnapshot(meta(20, 3, 1), snapData(20, 10)) // discards the log
			h.compact(21)
			h.verify("Compact beyond an empty log")
			h.restart("rejected Compacts")
		},
	},
	{
		name:     "CompactAll",
		contract: "Compacting every entry leaves an empty log whose next Save starts right after the compaction point.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 9, 1)...)
			h.saveSnapshot(meta(9, 1, 1), snapData(9, 10))
			h.compact(9)
			h.verify("Compact(last)")
			h.restart("Compact(last)")
			h.save(hs(2, 1, 9), ents(11, 11, 2)...) // gap: must fail
			h.save(hs(2, 1, 9), ents(10, 12, 2)...)
			h.verify("appending after compacting everything")
			h.restart("appending after compacting everything")
		},
	},
	{
		name:     "SnapshotRoundTrip",
		contract: "SaveSnapshot stores the metadata (index, term, configuration) and the bytes read, and Snapshot and Load return them unchanged.",
		check: func(c *checker) {
			h := newHarness(c)
			h.saveSnapshot(meta(100, 7, 1, 2, 3), snapData(100, 1<<20+17))
			h.verify("a 1 MiB snapshot on an empty storage")
			h.restart("SaveSnapshot")
			h.save(hs(7, 1, 100), ents(101, 105, 7)...)
			h.verify("appending after the snapshot")
			h.saveSnapshot(meta(103, 7), nil)
			h.verify("an empty snapshot with an empty configuration")
			h.restart("an empty snapshot")
		},
	},
	{
		name:     "SnapshotKeepsMatchingLog",
		contract: "SaveSnapshot keeps the stored entries, before and after its index, when the stored entry at its index has its term, and leaves the compaction point alone.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(2, 1, 0), ents(1, 10, 2)...)
			h.save(hs(3, 1, 0), ents(11, 20, 3)...)
			h.saveSnapshot(meta(15, 3, 1), snapData(15, 50))
			h.verify("snapshot at 15 term 3 over entries 1..20")
			h.restart("snapshot that keeps the log")
			h.compact(10)
			h.saveSnapshot(meta(18, 3, 1), snapData(18, 50))
			h.verify("second snapshot that keeps the log")
		},
	},
	{
		name:     "SnapshotDiscardsConflictingLog",
		contract: "SaveSnapshot discards the whole log and moves the compaction point to its index and term when the stored entry at its index has another term.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(2, 1, 0), ents(1, 10, 2)...)
			h.saveSnapshot(meta(5, 4, 1), snapData(5, 50))
			h.verify("snapshot at 5 term 4 over entries of term 2")
			h.restart("snapshot that discards the log")
			h.save(hs(4, 1, 5), ents(6, 8, 4)...)
			h.verify("appending after the snapshot")
			h.restart("appending after the snapshot")
		},
	},
	{
		name:     "SnapshotBeyondLog",
		contract: "SaveSnapshot past the last stored entry discards the whole log and moves the compaction point to its index and term.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(2, 1, 0), ents(1, 10, 2)...)
			h.saveSnapshot(meta(50, 3, 1, 2), snapData(50, 50))
			h.verify("snapshot at 50 over entries 1..10")
			h.restart("snapshot beyond the log")
			h.save(hs(3, 1, 50), ents(49, 51, 3)...) // at the compaction point: fails
			h.save(hs(3, 1, 50), ents(51, 52, 3)...)
			h.verify("appending after the snapshot")
		},
	},
	{
		name:     "SnapshotNotNewer",
		contract: "SaveSnapshot at an index not greater than the stored snapshot's fails and keeps the stored snapshot.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.saveSnapshot(meta(8, 1, 1), snapData(8, 30))
			h.saveSnapshot(meta(8, 1, 2), snapData(9, 30))
			h.saveSnapshot(meta(6, 1, 1), snapData(6, 30))
			h.verify("rejected older snapshots")
			h.restart("rejected older snapshots")
			h.saveSnapshot(meta(7, 1, 1), snapData(7, 30))
			h.verify("rejected older snapshot after reopen")
		},
	},
	{
		name:     "SnapshotReaderError",
		contract: "SaveSnapshot whose reader fails returns an error and keeps the previous snapshot and log.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			h.saveSnapshot(meta(4, 1, 1), snapData(4, 30))
			r := io.MultiReader(bytes.NewReader(snapData(9, 5000)), errReader{})
			if err := c.st.SaveSnapshot(meta(9, 1, 1), r); err == nil {
				c.errorf("SaveSnapshot with a failing reader returned nil, want an error")
			}
			r = io.MultiReader(bytes.NewReader(snapData(50, 5000)), errReader{})
			if err := c.st.SaveSnapshot(meta(50, 2, 1), r); err == nil {
				c.errorf("SaveSnapshot (that would discard the log) with a failing reader returned nil, want an error")
			}
			h.verify("failed SaveSnapshots")
			h.restart("failed SaveSnapshots")
			h.saveSnapshot(meta(9, 1, 1), snapData(9, 30))
			h.verify("SaveSnapshot after the failures")
		},
	},
	{
		name:     "SnapshotReplaced",
		contract: "A newer snapshot replaces the stored one, and a reader opened before the replacement reads the old bytes completely or fails, never a mix.",
		check: func(c *checker) {
			h := newHarness(c)
			h.save(hs(1, 1, 0), ents(1, 10, 1)...)
			old := snapData(4, 200<<10)
			h.saveSnapshot(meta(4, 1, 1), old)
			_, rc, err := c.st.Snapshot()
			if err != nil {
				c.fatalf("Snapshot: %v", err)
			}
			first := make([]byte, 1000)
			n, _ := io.ReadFull(rc, first)
			h.saveSnapshot(meta(8, 1, 1), snapData(8, 100<<10))
			rest, rerr := io.ReadAll(rc)
			rc.Close()
			if got := append(first[:n], rest...); rerr == nil && !bytes.Equal(got, old) {
				c.errorf("a reader opened before SaveSnapshot returned %d bytes that are not the old snapshot's %d bytes", len(got), len(old))
			}
			h.verify("replacing the snapshot")
			h.restart("replacing the snapshot")
		},
	},
	{
		name:     "ConcurrentUse",
		contract: "Save and Compact on one goroutine while others call SaveSnapshot, Snapshot and Load concurrently keep every result consistent (run the suite with -race).",
		check:    checkConcurrent,
	},
	{
		name:     "RandomOperations",
		contract: "Any sequence of Saves, SaveSnapshots and Compacts, valid or not, leaves Load and Snapshot agreeing with the contract after every step (and after every reopen).",
		check: func(c *checker) {
			for seed := uint64(1); seed <= 3; seed++ {
				if seed > 1 {
					c.freshStorage()
				}
				randomOps(c, seed, 150)
			}
		},
	},
}

// freshStorage closes the storage under test and makes a new empty one.
func (c *checker) freshStorage() {
	if cl, ok := c.st.(io.Closer); ok {
		if err := safeClose(cl); err != nil {
			c.errorf("Close: %v", err)
		}
	}
	c.st = c.newStorage()
	c.reopened = 0
	if c.st == nil {
		c.fatalf("newStorage returned nil")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("storagetest: injected read error") }

// randomOps runs steps random operations, about a third of them invalid,
// checking the storage against the model after each.
func randomOps(c *checker, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 0x5707a9e))
	h := newHarness(c)
	term := uint64(1)
	for step := range steps {
		m := &h.m
		desc := fmt.Sprintf("seed %d step %d", seed, step)
		switch op := rng.IntN(20); {
		case op < 12: // Save
			if rng.IntN(4) == 0 {
				term++
			}
			lo := m.comp
			if lo > 0 {
				lo--
			}
			first := lo + rng.Uint64N(m.last()-lo+3)
			n := rng.IntN(6)
			if m.last() == m.comp && rng.IntN(2) == 0 {
				first = m.comp + 1 // make an empty log grow
			}
			var es []raft.Entry
			if n > 0 {
				es = ents(first, first+uint64(n)-1, term)
			}
			if n > 2 && rng.IntN(10) == 0 {
				es[1].Index += 5 // not consecutive
			}
			h.save(hs(term, raft.NodeID(rng.IntN(4)), min(m.last(), uint64(rng.IntN(int(m.last()+1))))), es...)
			desc += fmt.Sprintf(": Save %s", fmtRange(es))
		case op < 15: // SaveSnapshot
			base := m.snap.Index
			if base > 0 {
				base--
			}
			idx := max(1, base+rng.Uint64N(m.last()+4-base))
			t, ok := m.term(idx)
			if !ok || rng.IntN(4) == 0 {
				t = term + uint64(rng.IntN(2))
			}
			h.saveSnapshot(meta(idx, t, 1, 2, 3), snapData(idx, rng.IntN(300)))
			desc += fmt.Sprintf(": SaveSnapshot(%d, term %d)", idx, t)
		case op < 18: // Compact
			lo := m.comp
			if lo > 1 {
				lo -= 2
			}
			i := lo + rng.Uint64N(max(m.snap.Index, m.comp)+3-lo)
			h.compact(i)
			desc += fmt.Sprintf(": Compact(%d)", i)
		default:
			if c.canReopen() {
				h.restart(desc)
			}
			continue
		}
		h.verify(desc)
		if len(c.failures) > 0 {
			c.fatalf("stopping seed %d at the first disagreement", seed)
		}
	}
	h.restart(fmt.Sprintf("seed %d", seed))
}
