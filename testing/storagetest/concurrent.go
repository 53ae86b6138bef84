package storagetest

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/raftgo/raft"
)

// checkConcurrent drives a storage the way a Node does: Save and Compact
// from one goroutine (the Node's loop), SaveSnapshot from another (the
// snapshotter), and Snapshot and Load from others (snapshot senders,
// inspection). Every result must be consistent with the entries' fixed
// contents: entry i always has term concTerm(i) and the same data.
func checkConcurrent(c *checker) {
	st := c.st
	const batches, perBatch = 200, 3
	type snapRequest struct {
		index uint64
		reply chan uint64 // if set, gets the index saved, or 0 on failure
	}
	snapReq := make(chan snapRequest, 64)
	snapDone := make(chan uint64, 64)
	snapperExit := make(chan struct{})
	var wg sync.WaitGroup
	goSafe := func(name string, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					c.errorf("%s: panic: %v", name, r)
				}
			}()
			f()
		}()
	}
	goSafe("snapshotter", func() {
		defer close(snapperExit)
		var prev uint64
		for req := range snapReq {
			i, saved := req.index, uint64(0)
			if i > prev {
				if err := st.SaveSnapshot(meta(i, concTerm(i), 1, 2, 3), bytesReader(snapData(i, 1000))); err != nil {
					c.errorf("snapshotter: SaveSnapshot(%d): %v", i, err)
				} else {
					prev, saved = i, i
				}
			}
			if req.reply != nil {
				req.reply <- saved
			} else if saved > 0 {
				select {
				case snapDone <- saved:
				default:
				}
			}
		}
	})
	for r := range 2 {
		goSafe(fmt.Sprintf("reader %d", r), func() {
			for range 40 {
				if err := checkConcLoad(st); err != nil {
					c.errorf("reader %d: %v", r, err)
					return
				}
				if err := checkConcSnapshot(st); err != nil {
					c.errorf("reader %d: %v", r, err)
					return
				}
			}
		})
	}
	var next, snapped uint64 = 1, 0
	for b := range batches {
		es := make([]raft.Entry, perBatch)
		for k := range es {
			es[k] = entry(next, concTerm(next))
			next++
		}
		if err := st.Save(hs(concTerm(next-1), 1, next-1), es); err != nil {
			c.errorf("Save %s: %v", fmtRange(es), err)
			break
		}
		switch {
		case b == batches/2:
			// Make sure at least one snapshot and compaction happen
			// whatever the scheduling: wait for this one.
			reply := make(chan uint64, 1)
			snapReq <- snapRequest{index: next - 1, reply: reply}
			select {
			case i := <-reply:
				snapped = max(snapped, i)
			case <-snapperExit:
			}
		case b%8 == 7:
			select {
			case snapReq <- snapRequest{index: next - 1}:
			default:
			}
		}
	drain:
		for {
			select {
			case i := <-snapDone:
				snapped = max(snapped, i)
			default:
				break drain
			}
		}
		if (b%10 == 9 || b == batches/2) && snapped > 0 {
			if err := st.Compact(snapped); err != nil {
				c.errorf("Compact(%d) after snapshot %d was saved: %v", snapped, snapped, err)
			}
		}
	}
	close(snapReq)
	wg.Wait()
	check := func(step string) {
		s := c.load(step)
		if err := checkConcState(s); err != nil {
			c.errorf("%s: %v", step, err)
		}
		if want := hs(concTerm(next-1), 1, next-1); s.HardState != want {
			c.errorf("%s: HardState = %+v, want %+v", step, s.HardState, want)
		}
		if last := s.CompactedIndex + uint64(len(s.Entries)); last != next-1 {
			c.errorf("%s: last index %d, want %d", step, last, next-1)
		}
		if err := checkConcSnapshot(c.st); err != nil {
			c.errorf("%s: %v", step, err)
		}
	}
	check("after the concurrent run")
	if c.canReopen() {
		c.restart()
		check("reopen after the concurrent run")
	}
}

func concTerm(i uint64) uint64 { return 1 + i/40 }

func checkConcLoad(st raft.Storage) error {
	s, err := st.Load()
	if err != nil {
		return fmt.Errorf("storage.Load: %v", err)
	}
	return checkConcState(s)
}

func checkConcState(s raft.State) error {
	if err := checkShape(s); err != nil {
		return err
	}
	if s.CompactedIndex > 0 && s.CompactedTerm != concTerm(s.CompactedIndex) {
		return fmt.Errorf("storage.Load: CompactedTerm %d at index %d, want %d", s.CompactedTerm, s.CompactedIndex, concTerm(s.CompactedIndex))
	}
	for _, e := range s.Entries {
		if want := entry(e.Index, concTerm(e.Index)); !entryEqual(e, want) {
			return fmt.Errorf("storage.Load: entry %s, want %s", fmtEntry(e), fmtEntry(want))
		}
	}
	return nil
}

func checkConcSnapshot(st raft.Storage) error {
	m, rc, err := st.Snapshot()
	if errors.Is(err, raft.ErrNoSnapshot) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage.Snapshot: %v", err)
	}
	data, rerr := io.ReadAll(rc)
	rc.Close()
	if rerr != nil {
		return fmt.Errorf("reading the snapshot at %d: %v", m.Index, rerr)
	}
	if m.Term != concTerm(m.Index) {
		return fmt.Errorf("storage.Snapshot: term %d at index %d, want %d", m.Term, m.Index, concTerm(m.Index))
	}
	if want := snapData(m.Index, 1000); string(data) != string(want) {
		return fmt.Errorf("storage.Snapshot: the data of the snapshot at %d is not the data saved with it", m.Index)
	}
	return nil
}
