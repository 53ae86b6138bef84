package filestorage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/raftgo/raft"
)

// A record on disk is a frame:
//
//	length  uint32, little-endian: number of body bytes (1..maxRecordSize)
//	crc     uint32, little-endian: CRC-32C of the 4 length bytes and the body,
//	        starting from the segment's salt instead of zero
//	body    length bytes: a kind byte, then the kind's fields
//
// The salt is a random number chosen for each segment and kept in its
// checkpoint (whose own frame has salt zero). A segment may be written
// into the file of a dead one (see remover), so past its last record lie
// the records of the file's previous life: they fail the checksum under
// the new salt, and since the checksum is linear in its starting value
// they fail it for certain whenever the two salts differ. The checkpoint
// also keeps the previous life's salt, so recovery recognizes those
// records as stale rather than damaged. Segments written before salts
// existed have neither field; both read as zero, the unsalted checksum.
//
// The kind byte's high bit (flagCommit) marks the last record of a batch
// written by one call; recovery applies a batch only if its commit record
// is intact, so every Save, Compact and SaveSnapshot is all or nothing.

const (
	frameHeaderSize = 8
	maxRecordSize   = 1 << 30

	flagCommit = 0x80
	kindMask   = 0x7f
)

// Record kinds.
const (
	kindCheckpoint byte = 1 // first record of every segment
	kindEntry      byte = 2
	kindHardState  byte = 3
	kindSnapshot   byte = 4
	kindCompact    byte = 5
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errTorn means the frame runs past the end of the input.
var errTorn = errors.New("record runs past the end of the file")

// snapInfo describes the stored snapshot; meta.Index == 0 means none.
type snapInfo struct {
	meta raft.SnapshotMeta
	size int64  // bytes in the snapshot file
	crc  uint32 // CRC-32C of those bytes
}

func (a snapInfo) equal(b snapInfo) bool {
	if a.meta.Index != b.meta.Index || a.meta.Term != b.meta.Term || a.size != b.size || a.crc != b.crc {
		return false
	}
	if len(a.meta.Config.Servers) != len(b.meta.Config.Servers) {
		return false
	}
	for i := range a.meta.Config.Servers {
		if a.meta.Config.Servers[i] != b.meta.Config.Servers[i] {
			return false
		}
	}
	return true
}

// checkpoint is the state at the start of a segment: everything a reader
// needs if the segments before it are gone.
type checkpoint struct {
	seq      uint64 // the segment's sequence number (also in its name)
	hs       raft.HardState
	comp     uint64
	compTerm uint64
	last     uint64 // entries comp+1..last are in earlier segments
	snap     snapInfo
	salt     uint32 // starts the checksum of every later record in the segment
	prevSalt uint32 // the salt of the records of the file's previous life
}

// record is one decoded record; which fields are set depends on kind.
type record struct {
	kind    byte
	commit  bool
	entry   raft.Entry     // kindEntry
	hs      raft.HardState // kindHardState
	index   uint64         // kindCompact
	term    uint64         // kindCompact
	snap    snapInfo       // kindSnapshot
	discard bool           // kindSnapshot: the log was discarded
	cp      checkpoint     // kindCheckpoint
}

// beginFrame reserves a frame header in b and returns the body's start.
func beginFrame(b []byte, kind byte, commit bool) ([]byte, int) {
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	start := len(b)
	if commit {
		kind |= flagCommit
	}
	return append(b, kind), start
}

// endFrame fills in the header of the frame whose body starts at start.
func endFrame(b []byte, start int, salt uint32) []byte {
	n := len(b) - start
	binary.LittleEndian.PutUint32(b[start-8:], uint32(n))
	crc := crc32.Update(salt, crcTable, b[start-8:start-4])
	crc = crc32.Update(crc, crcTable, b[start:])
	binary.LittleEndian.PutUint32(b[start-4:], crc)
	return b
}

func appendEntry(b []byte, e raft.Entry, commit bool, salt uint32) []byte {
	b, start := beginFrame(b, kindEntry, commit)
	b = binary.AppendUvarint(b, e.Index)
	b = binary.AppendUvarint(b, e.Term)
	b = append(b, byte(e.Type))
	b = append(b, e.Data...)
	return endFrame(b, start, salt)
}

func appendHardState(b []byte, hs raft.HardState, commit bool, salt uint32) []byte {
	b, start := beginFrame(b, kindHardState, commit)
	b = appendHS(b, hs)
	return endFrame(b, start, salt)
}

func appendCompact(b []byte, index, term uint64, commit bool, salt uint32) []byte {
	b, start := beginFrame(b, kindCompact, commit)
	b = binary.AppendUvarint(b, index)
	b = binary.AppendUvarint(b, term)
	return endFrame(b, start, salt)
}

func appendSnapshot(b []byte, si snapInfo, discard, commit bool, salt uint32) []byte {
	b, start := beginFrame(b, kindSnapshot, commit)
	if discard {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendSnapInfo(b, si)
	return endFrame(b, start, salt)
}

func appendCheckpoint(b []byte, cp checkpoint, commit bool) []byte {
	b, start := beginFrame(b, kindCheckpoint, commit)
	b = binary.AppendUvarint(b, cp.seq)
	b = appendHS(b, cp.hs)
	b = binary.AppendUvarint(b, cp.comp)
	b = binary.AppendUvarint(b, cp.compTerm)
	b = binary.AppendUvarint(b, cp.last)
	b = appendSnapInfo(b, cp.snap)
	b = binary.LittleEndian.AppendUint32(b, cp.salt)
	b = binary.LittleEndian.AppendUint32(b, cp.prevSalt)
	return endFrame(b, start, 0)
}

func appendHS(b []byte, hs raft.HardState) []byte {
	b = binary.AppendUvarint(b, hs.Term)
	b = binary.AppendUvarint(b, uint64(hs.Vote))
	return binary.AppendUvarint(b, hs.Commit)
}

func appendSnapInfo(b []byte, si snapInfo) []byte {
	b = binary.AppendUvarint(b, si.meta.Index)
	b = binary.AppendUvarint(b, si.meta.Term)
	b = binary.AppendUvarint(b, uint64(si.size))
	b = binary.LittleEndian.AppendUint32(b, si.crc)
	b = binary.AppendUvarint(b, uint64(len(si.meta.Config.Servers)))
	for _, s := range si.meta.Config.Servers {
		b = binary.AppendUvarint(b, uint64(s.ID))
		b = append(b, byte(s.Suffrage))
		b = binary.AppendUvarint(b, uint64(len(s.Addr)))
		b = append(b, s.Addr...)
	}
	return b
}

// decodeFrame checks the frame at the start of buf against salt and
// returns its body and the frame's total size. It returns errTorn if the
// frame does not fit in buf, and another error if the frame is damaged
// (or was written under another salt).
func decodeFrame(buf []byte, salt uint32) (body []byte, n int, err error) {
	if len(buf) < frameHeaderSize {
		return nil, 0, errTorn
	}
	size := binary.LittleEndian.Uint32(buf)
	if size == 0 || size > maxRecordSize {
		return nil, 0, fmt.Errorf("impossible record length %d", size)
	}
	if uint64(size) > uint64(len(buf)-frameHeaderSize) {
		return nil, 0, errTorn
	}
	body = buf[frameHeaderSize : frameHeaderSize+int(size)]
	crc := crc32.Update(salt, crcTable, buf[:4])
	crc = crc32.Update(crc, crcTable, body)
	if crc != binary.LittleEndian.Uint32(buf[4:]) {
		return nil, 0, errors.New("checksum mismatch")
	}
	return body, frameHeaderSize + int(size), nil
}

// decodeRecord decodes the record at the start of buf. Entry data aliases
// buf.
func decodeRecord(buf []byte, salt uint32) (record, int, error) {
	body, n, err := decodeFrame(buf, salt)
	if err != nil {
		return record{}, 0, err
	}
	r, err := decodeBody(body)
	return r, n, err
}

func decodeBody(body []byte) (record, error) {
	d := reader{buf: body[1:]}
	r := record{kind: body[0] & kindMask, commit: body[0]&flagCommit != 0}
	switch r.kind {
	case kindEntry:
		r.entry.Index = d.uvarint()
		r.entry.Term = d.uvarint()
		r.entry.Type = raft.EntryType(d.byte())
		if d.err == nil && d.off < len(d.buf) {
			r.entry.Data = d.buf[d.off:len(d.buf):len(d.buf)]
		}
		d.off = len(d.buf)
	case kindHardState:
		r.hs = d.hardState()
	case kindCompact:
		r.index = d.uvarint()
		r.term = d.uvarint()
	case kindSnapshot:
		switch d.byte() {
		case 0:
		case 1:
			r.discard = true
		default:
			d.fail("bad discard flag")
		}
		r.snap = d.snapInfo()
	case kindCheckpoint:
		r.cp.seq = d.uvarint()
		r.cp.hs = d.hardState()
		r.cp.comp = d.uvarint()
		r.cp.compTerm = d.uvarint()
		r.cp.last = d.uvarint()
		r.cp.snap = d.snapInfo()
		if d.off < len(d.buf) { // absent in segments written before salts
			r.cp.salt = d.uint32()
			r.cp.prevSalt = d.uint32()
		}
	default:
		return record{}, fmt.Errorf("unknown record kind %d", r.kind)
	}
	if d.err != nil {
		return record{}, d.err
	}
	if d.off != len(d.buf) {
		return record{}, fmt.Errorf("%d unexpected bytes at the end of a record", len(d.buf)-d.off)
	}
	return r, nil
}

// reader decodes fields, remembering the first error.
type reader struct {
	buf []byte
	off int
	err error
}

func (d *reader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("malformed record: %s at byte %d of its body", what, d.off+1)
	}
}

func (d *reader) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.buf) {
		d.fail("truncated")
		return 0
	}
	d.off++
	return d.buf[d.off-1]
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *reader) uint32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.buf)-d.off < 4 {
		d.fail("truncated")
		return 0
	}
	d.off += 4
	return binary.LittleEndian.Uint32(d.buf[d.off-4:])
}

func (d *reader) hardState() raft.HardState {
	return raft.HardState{Term: d.uvarint(), Vote: raft.NodeID(d.uvarint()), Commit: d.uvarint()}
}

func (d *reader) snapInfo() snapInfo {
	var si snapInfo
	si.meta.Index = d.uvarint()
	si.meta.Term = d.uvarint()
	size := d.uvarint()
	if size > 1<<62 {
		d.fail("impossible snapshot size")
	}
	si.size = int64(size)
	si.crc = d.uint32()
	n := d.uvarint()
	// Each server takes at least 3 bytes; this bounds the allocation.
	if n > uint64(len(d.buf)-d.off)/3 {
		d.fail("server count exceeds the record")
		return si
	}
	if n > 0 {
		si.meta.Config.Servers = make([]raft.Server, n)
	}
	for i := range si.meta.Config.Servers {
		s := &si.meta.Config.Servers[i]
		s.ID = raft.NodeID(d.uvarint())
		s.Suffrage = raft.Suffrage(d.byte())
		l := d.uvarint()
		if d.err == nil && l > uint64(len(d.buf)-d.off) {
			d.fail("address length exceeds the record")
		}
		if d.err != nil {
			return si
		}
		s.Addr = string(d.buf[d.off : d.off+int(l)])
		d.off += int(l)
	}
	return si
}

// appendRecord re-encodes r (used by tests to check decoding round trips).
func appendRecord(b []byte, r record, salt uint32) []byte {
	switch r.kind {
	case kindEntry:
		return appendEntry(b, r.entry, r.commit, salt)
	case kindHardState:
		return appendHardState(b, r.hs, r.commit, salt)
	case kindCompact:
		return appendCompact(b, r.index, r.term, r.commit, salt)
	case kindSnapshot:
		return appendSnapshot(b, r.snap, r.discard, r.commit, salt)
	case kindCheckpoint:
		return appendCheckpoint(b, r.cp, r.commit)
	}
	return b
}
