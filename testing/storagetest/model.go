package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/raftgo/raft"
)

// model is the raft.Storage contract written as the simplest possible
// in-memory value: the suite compares what an implementation loads with
// what the model says it must hold.
type model struct {
	hs       raft.HardState
	snap     raft.SnapshotMeta
	snapData []byte
	hasSnap  bool
	comp     uint64
	compTerm uint64
	ents     []raft.Entry // ents[i].Index == comp+1+i
}

func (m *model) last() uint64 { return m.comp + uint64(len(m.ents)) }

// term returns the term of the entry at i if it is the compaction point or
// a stored entry.
func (m *model) term(i uint64) (uint64, bool) {
	if i == m.comp {
		return m.compTerm, true
	}
	if i < m.comp || i > m.last() {
		return 0, false
	}
	return m.ents[i-m.comp-1].Term, true
}

// save applies Save to the model, or reports why the contract makes it an
// error (in which case the model is unchanged).
func (m *model) save(hs raft.HardState, ents []raft.Entry) error {
	if len(ents) > 0 {
		first := ents[0].Index
		if first <= m.comp {
			return fmt.Errorf("first index %d is at or before the compaction point %d", first, m.comp)
		}
		if first > m.last()+1 {
			return fmt.Errorf("first index %d leaves a gap after last index %d", first, m.last())
		}
		for i := 1; i < len(ents); i++ {
			if ents[i].Index != ents[i-1].Index+1 {
				return fmt.Errorf("entries not consecutive at index %d", ents[i].Index)
			}
		}
		m.ents = append(m.ents[:first-m.comp-1:first-m.comp-1], ents...)
	}
	m.hs = hs
	return nil
}

// saveSnapshot applies SaveSnapshot to the model.
func (m *model) saveSnapshot(meta raft.SnapshotMeta, data []byte) error {
	if m.hasSnap && meta.Index <= m.snap.Index {
		return fmt.Errorf("snapshot at %d is not newer than stored snapshot at %d", meta.Index, m.snap.Index)
	}
	if t, ok := m.term(meta.Index); !ok || t != meta.Term {
		m.ents = nil
		m.comp, m.compTerm = meta.Index, meta.Term
	}
	m.snap, m.snapData, m.hasSnap = cloneMeta(meta), bytes.Clone(data), true
	return nil
}

// compact applies Compact to the model. Compacting at or before the
// compaction point changes nothing.
func (m *model) compact(i uint64) error {
	if i <= m.comp {
		return nil
	}
	if i > m.last() {
		return fmt.Errorf("compact to %d beyond last index %d", i, m.last())
	}
	if i > m.snap.Index {
		return fmt.Errorf("compact to %d beyond snapshot index %d", i, m.snap.Index)
	}
	n := i - m.comp
	m.compTerm = m.ents[n-1].Term
	m.comp = i
	m.ents = slices.Clone(m.ents[n:])
	return nil
}

func (m *model) state() raft.State {
	return raft.State{
		HardState:      m.hs,
		Snapshot:       cloneMeta(m.snap),
		CompactedIndex: m.comp,
		CompactedTerm:  m.compTerm,
		Entries:        slices.Clone(m.ents),
	}
}

func cloneMeta(m raft.SnapshotMeta) raft.SnapshotMeta {
	m.Config = m.Config.Clone()
	return m
}

// checkShape reports a Load result that breaks the invariants documented on
// raft.State, whatever was stored.
func checkShape(st raft.State) error {
	var errs []error
	for i, e := range st.Entries {
		if want := st.CompactedIndex + 1 + uint64(i); e.Index != want {
			errs = append(errs, fmt.Errorf("storage.Load: Entries[%d].Index = %d, want %d (CompactedIndex %d + 1 + position)", i, e.Index, want, st.CompactedIndex))
			break
		}
	}
	return errors.Join(errs...)
}

// diffState describes how got differs from want, or returns "".
func diffState(got, want raft.State) string {
	var b strings.Builder
	if got.HardState != want.HardState {
		fmt.Fprintf(&b, "\n\tHardState = %+v, want %+v", got.HardState, want.HardState)
	}
	if !metaEqual(got.Snapshot, want.Snapshot) {
		fmt.Fprintf(&b, "\n\tSnapshot = %s, want %s", fmtMeta(got.Snapshot), fmtMeta(want.Snapshot))
	}
	if got.CompactedIndex != want.CompactedIndex || got.CompactedTerm != want.CompactedTerm {
		fmt.Fprintf(&b, "\n\tcompaction point = (index %d, term %d), want (index %d, term %d)", got.CompactedIndex, got.CompactedTerm, want.CompactedIndex, want.CompactedTerm)
	}
	if d := diffEntries(got.Entries, want.Entries); d != "" {
		b.WriteString("\n\tEntries: " + d)
	}
	return b.String()
}

func diffEntries(got, want []raft.Entry) string {
	for i := range min(len(got), len(want)) {
		if !entryEqual(got[i], want[i]) {
			return fmt.Sprintf("entry %d = %s, want %s", i, fmtEntry(got[i]), fmtEntry(want[i]))
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d entries %s, want %d entries %s", len(got), fmtRange(got), len(want), fmtRange(want))
	}
	return ""
}

func fmtRange(ents []raft.Entry) string {
	if len(ents) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", ents[0].Index, ents[len(ents)-1].Index)
}

func entryEqual(a, b raft.Entry) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data)
}

func fmtEntry(e raft.Entry) string {
	d := e.Data
	suffix := ""
	if len(d) > 16 {
		d, suffix = d[:16], "..."
	}
	return fmt.Sprintf("{Index:%d Term:%d Type:%v Data:%q%s}", e.Index, e.Term, e.Type, d, suffix)
}

func metaEqual(a, b raft.SnapshotMeta) bool {
	return a.Index == b.Index && a.Term == b.Term && slices.Equal(a.Config.Servers, b.Config.Servers)
}

func fmtMeta(m raft.SnapshotMeta) string {
	return fmt.Sprintf("{Index:%d Term:%d Servers:%v}", m.Index, m.Term, m.Config.Servers)
}
