package filestorage

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/raftgo/raft"
)

// CorruptError reports damage that recovery will not repair because
// repairing it could lose acknowledged data: a bad record anywhere but the
// torn tail of the last segment, a missing segment, a gap in the indexes,
// or a snapshot file that does not match the log.
type CorruptError struct {
	File   string // path of the damaged (or missing) file
	Offset int64  // byte offset of the damage in File
	Reason string
}

// Error returns the file, the offset and what is wrong there.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("filestorage: %s: corrupt at offset %d: %s", e.File, e.Offset, e.Reason)
}

// segment is one log file, named by its sequence number.
type segment struct {
	seq     uint64
	size    int64  // bytes of whole, committed records
	alloc   int64  // bytes in the file: size plus preallocated zeros or a previous life's records
	maxLive uint64 // highest index of a live entry it holds; 0 if none
	salt    uint32 // the salt of its records' checksums
}

func segName(seq uint64) string { return fmt.Sprintf("%016x.wal", seq) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".wal")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil && seq > 0
}

func snapName(index, term uint64) string { return fmt.Sprintf("snap-%016x-%016x.snap", index, term) }

func isSnapName(name string) bool {
	return strings.HasPrefix(name, "snap-") && strings.HasSuffix(name, ".snap")
}

// logState is the log rebuilt by replaying the segments.
//
// Invariants: comp <= missing <= last; ents holds entries missing+1..last;
// entries comp+1..missing were in segments that are no longer read (after
// a successful replay, missing == comp).
type logState struct {
	hs       raft.HardState
	snap     snapInfo
	comp     uint64
	compTerm uint64
	missing  uint64
	last     uint64
	ents     []raft.Entry
	segs     []*segment
}

func (st *logState) term(i uint64) (uint64, bool) {
	if i == st.comp {
		return st.compTerm, true
	}
	if i <= st.missing || i > st.last {
		return 0, false
	}
	return st.ents[i-st.missing-1].Term, true
}

func (st *logState) truncate(from uint64) {
	for _, sg := range st.segs {
		sg.maxLive = min(sg.maxLive, from-1)
	}
	if from <= st.missing+1 {
		st.ents, st.missing = nil, from-1
	} else {
		st.ents = st.ents[:from-st.missing-1]
	}
	st.last = from - 1
}

func (st *logState) compact(index, term uint64) {
	if index >= st.missing {
		st.ents = st.ents[index-st.missing:]
		st.missing = index
	}
	st.comp, st.compTerm = index, term
}

func (st *logState) discardAll(index, term uint64) {
	for _, sg := range st.segs {
		sg.maxLive = 0
	}
	st.ents = nil
	st.comp, st.compTerm, st.missing, st.last = index, term, index, index
}

// apply replays one committed record.
func (st *logState) apply(sg *segment, r record) error {
	switch r.kind {
	case kindHardState:
		st.hs = r.hs
	case kindEntry:
		i := r.entry.Index
		if i <= st.comp {
			return fmt.Errorf("entry %d is at or before the compaction point %d", i, st.comp)
		}
		if i > st.last+1 {
			return fmt.Errorf("index gap: entry %d follows last index %d", i, st.last)
		}
		if i <= st.last {
			st.truncate(i)
		}
		st.ents = append(st.ents, r.entry)
		st.last = i
		sg.maxLive = i
	case kindCompact:
		if r.index <= st.comp || r.index > st.last {
			return fmt.Errorf("compaction to %d outside the log (%d, %d]", r.index, st.comp, st.last)
		}
		if t, ok := st.term(r.index); ok && t != r.term {
			return fmt.Errorf("compaction to %d records term %d but the entry has term %d", r.index, r.term, t)
		}
		st.compact(r.index, r.term)
	case kindSnapshot:
		m := r.snap.meta
		if m.Index == 0 || (st.snap.meta.Index > 0 && m.Index <= st.snap.meta.Index) {
			return fmt.Errorf("snapshot at %d is not newer than the snapshot at %d", m.Index, st.snap.meta.Index)
		}
		if r.discard {
			st.discardAll(m.Index, m.Term)
		} else if t, ok := st.term(m.Index); (ok && t != m.Term) || (!ok && (m.Index > st.last || m.Index < st.comp)) {
			return fmt.Errorf("snapshot at %d term %d keeps a log that does not hold that entry", m.Index, m.Term)
		}
		st.snap = r.snap
	default:
		return fmt.Errorf("unexpected record kind %d", r.kind)
	}
	return nil
}

// replay reads the segments with the given sequence numbers, in order, and
// rebuilds the log. Damage is a *CorruptError, except a torn tail of the
// last segment: cut is then the length of its whole, committed records
// (and -1 if there is nothing to cut).
func replay(fsys fileSystem, dir string, seqs []uint64) (st *logState, cut int64, err error) {
	st = &logState{}
	cut = -1
	for si, seq := range seqs {
		path := filepath.Join(dir, segName(seq))
		buf, err := fsys.ReadFile(path)
		if err != nil {
			return nil, -1, fmt.Errorf("filestorage: reading segment: %w", err)
		}
		isLast := si == len(seqs)-1
		corrupt := func(off int, format string, args ...any) error {
			return &CorruptError{File: path, Offset: int64(off), Reason: fmt.Sprintf(format, args...)}
		}
		sg := &segment{seq: seq}
		st.segs = append(st.segs, sg)

		// Segments are created whole by a rename, so the header is never
		// torn: any damage to it is corruption.
		body, n, err := decodeFrame(buf, 0)
		if err != nil {
			return nil, -1, corrupt(0, "segment header: %v", err)
		}
		hdr, err := decodeBody(body)
		if err != nil || hdr.kind != kindCheckpoint || !hdr.commit {
			return nil, -1, corrupt(0, "segment does not start with a checkpoint record (%v)", err)
		}
		cp := hdr.cp
		sg.salt = cp.salt
		// A file written before (a recycled one) may hold records of its
		// previous life past the last of this one's.
		var lives *frameLives
		if cp.prevSalt != cp.salt {
			lives = &frameLives{prev: cp.prevSalt}
		}
		if cp.seq != seq {
			return nil, -1, corrupt(0, "header says it is segment %d", cp.seq)
		}
		if cp.comp > cp.last || (cp.snap.meta.Index > 0 && cp.comp > cp.snap.meta.Index) {
			return nil, -1, corrupt(0, "header holds an impossible state (compacted %d, last %d, snapshot %d)", cp.comp, cp.last, cp.snap.meta.Index)
		}
		if si == 0 {
			st.hs, st.snap = cp.hs, cp.snap
			st.comp, st.compTerm = cp.comp, cp.compTerm
			st.missing, st.last = cp.last, cp.last
		} else if cp.hs != st.hs || cp.comp != st.comp || cp.compTerm != st.compTerm || cp.last != st.last || !cp.snap.equal(st.snap) {
			return nil, -1, corrupt(0, "header (last index %d, compacted to %d, term %d) disagrees with the segments before it (last index %d, compacted to %d, term %d)",
				cp.last, cp.comp, cp.hs.Term, st.last, st.comp, st.hs.Term)
		}

		type pendingRecord struct {
			r   record
			off int
		}
		var pending []pendingRecord
		off, committed := n, n
		for off < len(buf) {
			if zeroTail(buf, off) {
				break // the preallocated end of the segment
			}
			body, n, err := decodeFrame(buf[off:], cp.salt)
			if err != nil {
				if lives.stale(buf[off:]) {
					break // the previous life's records: the end of this one's
				}
				if !isLast {
					return nil, -1, corrupt(off, "%v", err)
				}
				if next := laterWrite(buf, off+1, cp.salt, lives); next >= 0 {
					return nil, -1, corrupt(off, "%v (a record written after this one's batch was synced follows at offset %d, so this is not a torn write)", err, next)
				}
				break // a torn tail
			}
			r, err := decodeBody(body)
			if err != nil {
				return nil, -1, corrupt(off, "%v", err)
			}
			if r.kind == kindCheckpoint {
				return nil, -1, corrupt(off, "checkpoint record inside a segment")
			}
			pending = append(pending, pendingRecord{r, off})
			off += n
			if r.commit {
				for _, p := range pending {
					if err := st.apply(sg, p.r); err != nil {
						return nil, -1, corrupt(p.off, "%v", err)
					}
				}
				pending = pending[:0]
				committed = off
			}
		}
		// The last segment is cut back to its last committed batch unless
		// only zeros follow, even where a record of the previous life
		// follows: records of a torn batch may lie beyond that one (its
		// first blocks lost, later ones written), and a later batch that
		// ended where one of them begins would make it read as valid.
		// Other segments were cut and synced when closed; a previous
		// life's record there ends them as well as the file's end would.
		if !zeroTail(buf, committed) {
			if isLast {
				cut = int64(committed)
			} else if !lives.stale(buf[committed:]) {
				return nil, -1, corrupt(committed, "segment ends with an incomplete batch")
			}
		}
		sg.size, sg.alloc = int64(committed), int64(len(buf))
	}
	if len(seqs) > 0 && st.missing > st.comp {
		return nil, -1, &CorruptError{File: filepath.Join(dir, segName(seqs[0])), Offset: 0,
			Reason: fmt.Sprintf("entries %d..%d are in no segment: segments before this one were deleted or lost", st.comp+1, st.missing)}
	}
	return st, cut, nil
}

// zeroTail reports whether buf holds only zeros from off on (the
// preallocated part of a segment; a record never starts with a zero
// length, so a frame boundary followed by zeros is the end of the log).
func zeroTail(buf []byte, off int) bool {
	if off < len(buf) && buf[off] != 0 {
		return false // the common case, decided without a scan
	}
	for _, b := range buf[off:] {
		if b != 0 {
			return false
		}
	}
	return true
}

// laterWrite returns the offset of a whole record at or after from that
// must have been written by a later batch than the damaged one before
// from, or -1. Batches are written one at a time, each synced before the
// next starts, so only the last batch can be torn, and its pages may reach
// the disk in any order: whole records of it may follow the damage, up to
// and including its commit record. A record after a commit record that
// follows the damage is a later batch: the damage is to synced data.
//
// In a recycled file the search ends at the first record of the previous
// life (lives): the segment's own writes end before it.
func laterWrite(buf []byte, from int, salt uint32, lives *frameLives) int {
	sawCommit := false
	for p := from; ; {
		q, stale := findFrame(buf, p, salt, lives)
		if stale {
			return -1
		}
		if q < 0 || sawCommit {
			return q
		}
		body, n, _ := decodeFrame(buf[q:], salt)
		if r, err := decodeBody(body); err == nil && r.commit {
			sawCommit = true
		}
		p = q + n
	}
}

// findFrame returns the offset of the first intact frame under salt at or
// after from, or -1; or, if a frame of the previous life (lives) comes
// first, its offset and true.
//
// It checks the kind byte before the checksum: most offsets in arbitrary
// bytes fail that, and the checksum would cost the whole claimed length.
func findFrame(buf []byte, from int, salt uint32, lives *frameLives) (int, bool) {
	for p := from; p+frameHeaderSize < len(buf); p++ {
		if k := buf[p+frameHeaderSize] & kindMask; k < kindCheckpoint || k > kindCompact {
			continue
		}
		if _, _, err := decodeFrame(buf[p:], salt); err == nil {
			return p, false
		}
		if lives.stale(buf[p:]) {
			return p, true
		}
	}
	return -1, false
}

// frameLives tells a segment's records from those of the previous life of
// its file, which differ in salt. A nil *frameLives is a segment in a
// file of its own, where every frame is the segment's.
type frameLives struct {
	prev uint32
}

// stale reports whether buf starts with an intact frame of the previous
// life.
func (l *frameLives) stale(buf []byte) bool {
	if l == nil {
		return false
	}
	_, _, err := decodeFrame(buf, l.prev)
	return err == nil
}
