package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/raftgo/raft"
)

// harness applies each operation to the storage under test and to the
// model, and checks they agree.
type harness struct {
	c *checker
	m model
}

func newHarness(c *checker) *harness { return &harness{c: c} }

// save calls Save on both; an error from exactly one of them is a failure.
func (h *harness) save(hs raft.HardState, ents ...raft.Entry) {
	merr := h.m.save(hs, cloneEntries(ents))
	err := h.c.st.Save(hs, ents)
	h.agree(fmt.Sprintf("Save(%+v, %s)", hs, fmtRange(ents)), err, merr)
}

// saveSnapshot calls SaveSnapshot on both.
func (h *harness) saveSnapshot(meta raft.SnapshotMeta, data []byte) {
	merr := h.m.saveSnapshot(meta, data)
	err := h.c.st.SaveSnapshot(cloneMeta(meta), bytes.NewReader(bytes.Clone(data)))
	h.agree(fmt.Sprintf("SaveSnapshot(%s, %d bytes)", fmtMeta(meta), len(data)), err, merr)
}

// compact calls Compact on both. Compacting at or before the compaction
// point may return an error or not, as long as it changes nothing.
func (h *harness) compact(i uint64) {
	noop := i <= h.m.comp
	merr := h.m.compact(i)
	err := h.c.st.Compact(i)
	if noop {
		return
	}
	h.agree(fmt.Sprintf("Compact(%d)", i), err, merr)
}

func (h *harness) agree(op string, err, merr error) {
	h.c.helperAgree(op, err, merr)
}

func (c *checker) helperAgree(op string, err, merr error) {
	switch {
	case err != nil && merr == nil:
		c.fatalf("%s%s: unexpected error: %v", op, c.where(), err)
	case err == nil && merr != nil:
		c.errorf("%s%s returned nil, want an error: %v", op, c.where(), merr)
	}
}

// verify checks that Load and Snapshot return what the model holds.
func (h *harness) verify(step string) {
	h.c.verifyState(step, &h.m)
}

// restart reopens the storage when it supports that, and verifies nothing
// acknowledged was lost.
func (h *harness) restart(step string) {
	if !h.c.canReopen() {
		return
	}
	h.c.restart()
	h.verify("reopen after " + step)
}

func (c *checker) load(step string) raft.State {
	st, err := c.st.Load()
	if err != nil {
		c.fatalf("%s%s: Load: %v", step, c.where(), err)
	}
	if err := checkShape(st); err != nil {
		c.errorf("%s%s: %v", step, c.where(), err)
	}
	return st
}

func (c *checker) verifyState(step string, m *model) {
	got := c.load(step)
	if d := diffState(got, m.state()); d != "" {
		c.errorf("%s%s: Load differs from what was stored:%s", step, c.where(), d)
	}
	c.verifySnapshot(step, m)
}

func (c *checker) verifySnapshot(step string, m *model) {
	meta, rc, err := c.st.Snapshot()
	if !m.hasSnap {
		if !errors.Is(err, raft.ErrNoSnapshot) {
			c.errorf("%s%s: Snapshot with none stored returned error %v, want ErrNoSnapshot", step, c.where(), err)
		}
		if rc != nil {
			rc.Close()
		}
		return
	}
	if err != nil {
		c.errorf("%s%s: Snapshot: %v", step, c.where(), err)
		return
	}
	if rc == nil {
		c.errorf("%s%s: Snapshot returned a nil reader and no error", step, c.where())
		return
	}
	data, rerr := io.ReadAll(rc)
	if cerr := rc.Close(); cerr != nil {
		c.errorf("%s%s: closing the snapshot reader: %v", step, c.where(), cerr)
	}
	if !metaEqual(meta, m.snap) {
		c.errorf("%s%s: Snapshot metadata = %s, want %s", step, c.where(), fmtMeta(meta), fmtMeta(m.snap))
	}
	if rerr != nil {
		c.errorf("%s%s: reading the snapshot: %v", step, c.where(), rerr)
	} else if !bytes.Equal(data, m.snapData) {
		c.errorf("%s%s: snapshot data = %d bytes %q..., want %d bytes %q...", step, c.where(), len(data), head(data), len(m.snapData), head(m.snapData))
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func cloneEntries(ents []raft.Entry) []raft.Entry {
	out := make([]raft.Entry, len(ents))
	for i, e := range ents {
		e.Data = bytes.Clone(e.Data)
		out[i] = e
	}
	return out
}

// ents returns entries lo..hi (inclusive) of the given term, with data that
// names index and term and entry types that vary.
func ents(lo, hi, term uint64) []raft.Entry {
	var out []raft.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, entry(i, term))
	}
	return out
}

func entry(i, term uint64) raft.Entry {
	e := raft.Entry{Index: i, Term: term, Data: fmt.Appendf(nil, "entry %d of term %d", i, term)}
	switch i % 7 {
	case 3:
		e.Type = raft.EntryNoop
		e.Data = nil
	case 5:
		e.Type = raft.EntryConfig
	}
	return e
}

func hs(term uint64, vote raft.NodeID, commit uint64) raft.HardState {
	return raft.HardState{Term: term, Vote: vote, Commit: commit}
}

func meta(index, term uint64, ids ...raft.NodeID) raft.SnapshotMeta {
	m := raft.SnapshotMeta{Index: index, Term: term}
	for _, id := range ids {
		m.Config.Servers = append(m.Config.Servers, raft.Server{ID: id, Addr: fmt.Sprintf("node-%d:7000", id)})
	}
	return m
}

func snapData(index uint64, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(index*31 + uint64(i)*7)
	}
	return b
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
