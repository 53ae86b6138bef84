package rafttest

import (
	"bytes"
	"io"

	"github.com/raftgo/raft"
)

// maxInFlight bounds the messages in flight. A healthy cluster has at most
// a few hundred; a run past the bound is amplifying messages without end
// and is stopped as a liveness failure rather than left to hang.
const maxInFlight = 20000

type opKind uint8

const (
	opReady opKind = iota
	opSnapshot
)

// diskOp is one write in a node's disk queue. Writes complete in order.
type diskOp struct {
	kind   opKind
	doneAt int64
	rd     raft.Ready
	sent   bool // messages already sent (AckBeforePersist)
	// opSnapshot:
	meta      raft.SnapshotMeta
	data      []byte
	compactTo uint64
}

func (c *cluster) diskLatency(n *simNode) int64 {
	if n.diskDelay > 0 {
		return 1 + c.rng.Int64N(n.diskDelay)
	}
	return c.rng.Int64N(3)
}

// complete carries out the first write of n's disk queue: it becomes
// durable, its messages are sent, its committed entries applied.
func (c *cluster) complete(n *simNode) {
	op := n.pending[0]
	// Shift in place: the queue is short, and keeping its array avoids
	// reallocating it on every append.
	k := copy(n.pending, n.pending[1:])
	n.pending[k] = diskOp{}
	n.pending = n.pending[:k]
	c.persist(n, &op)
	if c.err != nil {
		return
	}
	switch op.kind {
	case opSnapshot:
		if c.tracing {
			c.tracef("n%d snapshot durable index=%d", n.id, op.meta.Index)
		}
		if op.meta.Index > n.core.LastSnapshot().Index {
			if err := n.core.SnapshotSaved(op.meta, op.compactTo); err != nil {
				c.violate("storage", "n%d: SnapshotSaved(%d, %d): %v", n.id, op.meta.Index, op.compactTo, err)
				return
			}
			n.log.compact(n.core.Status().FirstIndex - 1)
		}
	case opReady:
		rd := op.rd
		if c.tracing {
			c.tracef("n%d durable hs=%v ents=%d", n.id, rd.HardState, len(rd.Entries))
		}
		if !op.sent {
			c.send(n, rd.Messages)
		}
		c.apply(n, &rd)
		if c.err != nil {
			return
		}
		n.core.Advance(rd)
	}
}

// persist makes op's writes durable in n's storage.
func (c *cluster) persist(n *simNode, op *diskOp) {
	switch op.kind {
	case opSnapshot:
		cur, _, err := n.st.Snapshot()
		if err == nil && cur.Index >= op.meta.Index {
			return // a newer snapshot arrived meanwhile
		}
		if err := n.st.SaveSnapshot(op.meta, bytes.NewReader(op.data)); err != nil {
			c.violate("storage", "n%d: saving snapshot at %d: %v", n.id, op.meta.Index, err)
			return
		}
		n.disk.saveSnapshot(op.meta.Index, op.meta.Term)
		if err := n.st.Compact(op.compactTo); err != nil {
			c.violate("storage", "n%d: compacting to %d: %v", n.id, op.compactTo, err)
		}
		n.disk.compact(op.compactTo)
	case opReady:
		rd := &op.rd
		if rd.Snapshot != nil {
			if err := n.st.SaveSnapshot(*rd.Snapshot, bytes.NewReader(rd.SnapshotData)); err != nil {
				c.violate("storage", "n%d: saving received snapshot at %d: %v", n.id, rd.Snapshot.Index, err)
				return
			}
			n.disk.saveSnapshot(rd.Snapshot.Index, rd.Snapshot.Term)
		}
		if !rd.MustSync {
			return
		}
		hs, old := rd.HardState, n.durable
		switch {
		case hs.Term < old.Term:
			c.violate("durability", "n%d persists term %d after term %d", n.id, hs.Term, old.Term)
		case hs.Term == old.Term && old.Vote != raft.None && hs.Vote != old.Vote:
			c.violate("durability", "n%d changes its vote in term %d from n%d to n%d", n.id, hs.Term, old.Vote, hs.Vote)
		case hs.Commit < old.Commit:
			c.violate("durability", "n%d persists commit %d after commit %d", n.id, hs.Commit, old.Commit)
		}
		if err := n.st.Save(hs, rd.Entries); err != nil {
			c.violate("storage", "n%d: saving hard state %v and %d entries: %v", n.id, hs, len(rd.Entries), err)
			return
		}
		n.durable = hs
		if len(rd.Entries) > 0 {
			n.disk.truncate(rd.Entries[0].Index - 1)
			for i := range rd.Entries {
				n.disk.append(rd.Entries[i].Index, rd.Entries[i].Term)
			}
		}
	}
}

// send puts msgs on the network. Snapshot messages get their data from the
// sender's storage, as the Node runtime does.
func (c *cluster) send(n *simNode, msgs []raft.Message) {
	for _, m := range msgs {
		if m.Type == raft.MsgSnap && m.SnapshotData == nil {
			meta, rc, err := n.st.Snapshot()
			if err != nil {
				if c.tracing {
					c.tracef("n%d cannot send snapshot: %v", n.id, err)
				}
				continue
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				c.violate("storage", "n%d: reading snapshot: %v", n.id, err)
				return
			}
			if data == nil {
				data = []byte{}
			}
			m.Snapshot, m.SnapshotData = meta, data
			c.stats.SnapshotsSent++
		}
		if c.net.send(m, c.now) {
			if c.tracing {
				c.tracef("drop %v", m)
			}
		} else {
			if c.tracing {
				c.tracef("send %v", m)
			}
		}
	}
}

// snapshot makes n snapshot its state machine at its applied index and
// compact its log, keeping a few trailing entries.
func (c *cluster) snapshot(n *simNode) {
	if !n.up || n.applied == 0 || n.applied <= n.core.LastSnapshot().Index {
		return
	}
	meta, err := n.core.SnapshotMetaAt(n.applied)
	if err != nil {
		if c.tracing {
			c.tracef("n%d no snapshot: %v", n.id, err)
		}
		return
	}
	snap, err := n.sm.Snapshot()
	if err != nil {
		c.violate("determinism", "n%d: state machine Snapshot failed: %v", n.id, err)
		return
	}
	var buf bytes.Buffer
	_, err = snap.WriteTo(&buf)
	snap.Release()
	if err != nil {
		c.violate("determinism", "n%d: writing a snapshot failed: %v", n.id, err)
		return
	}
	c.checkSnapshotBytes(n, meta.Index, buf.Bytes())
	c.stats.Snapshots++
	trailing := uint64(c.rng.IntN(4))
	op := diskOp{kind: opSnapshot, meta: meta, data: buf.Bytes(), compactTo: meta.Index - min(trailing, meta.Index)}
	op.doneAt = max(c.now, n.lastDone) + c.diskLatency(n)
	n.lastDone = op.doneAt
	n.pending = append(n.pending, op)
	if c.tracing {
		c.tracef("n%d snapshot index=%d term=%d", n.id, meta.Index, meta.Term)
	}
}

// diskLog mirrors the terms of the entries in a node's storage: what
// survives a crash.
type diskLog struct {
	offset, offsetTerm uint64
	terms              []uint64 // terms[i] is the term of index offset+1+i
}

func (d *diskLog) last() uint64 { return d.offset + uint64(len(d.terms)) }

// holds reports whether the storage holds entry (index, term), or a
// snapshot that covers index.
func (d *diskLog) holds(index, term uint64) bool {
	switch {
	case index <= d.offset:
		return true
	case index > d.last():
		return false
	}
	return d.terms[index-d.offset-1] == term
}

func (d *diskLog) term(index uint64) (uint64, bool) {
	switch {
	case index == d.offset:
		return d.offsetTerm, true
	case index < d.offset || index > d.last():
		return 0, false
	}
	return d.terms[index-d.offset-1], true
}

func (d *diskLog) reset(offset, term uint64) {
	d.offset, d.offsetTerm, d.terms = offset, term, d.terms[:0]
}

func (d *diskLog) truncate(last uint64) {
	if last >= d.offset && last < d.last() {
		d.terms = d.terms[:last-d.offset]
	}
}

func (d *diskLog) append(index, term uint64) {
	if index == d.last()+1 {
		d.terms = append(d.terms, term)
	}
}

// saveSnapshot mirrors MemoryStorage.SaveSnapshot: the log is kept if it
// holds the snapshot's last entry, else replaced by the snapshot.
func (d *diskLog) saveSnapshot(index, term uint64) {
	if t, ok := d.term(index); !ok || t != term {
		d.reset(index, term)
	}
}

func (d *diskLog) compact(to uint64) {
	if to <= d.offset || to > d.last() {
		return
	}
	t, _ := d.term(to)
	d.terms = append(d.terms[:0], d.terms[to-d.offset:]...)
	d.offset, d.offsetTerm = to, t
}
