package kvstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"slices"
)

// snapshotMagic starts every snapshot; the last byte is the format version.
var snapshotMagic = []byte("KVSNAP\x00\x01")

// ErrBadSnapshot wraps every failure to decode a snapshot.
var ErrBadSnapshot = errors.New("kvstore: corrupt snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshot is a frozen view of a Store's maps: the Store copies them before
// its next write, so nothing changes them while WriteTo runs.
type snapshot struct {
	applied  uint64
	data     map[string][]byte
	sessions map[uint64]session
}

// WriteTo writes the snapshot: a magic header, the applied index, the keys
// in sorted order, the client sessions in ID order, and a CRC-32C of all of
// it. The same state always produces the same bytes.
func (sn *snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	h := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(cw, h), 64<<10)
	var scratch []byte
	put := func(v uint64) {
		scratch = binary.AppendUvarint(scratch[:0], v)
		bw.Write(scratch)
	}
	putBytes := func(b []byte) {
		put(uint64(len(b)))
		bw.Write(b)
	}
	bw.Write(snapshotMagic)
	put(sn.applied)
	put(uint64(len(sn.data)))
	for _, k := range slices.Sorted(maps.Keys(sn.data)) {
		putBytes([]byte(k))
		putBytes(sn.data[k])
	}
	put(uint64(len(sn.sessions)))
	for _, id := range slices.Sorted(maps.Keys(sn.sessions)) {
		ss := sn.sessions[id]
		put(id)
		put(ss.seq)
		put(ss.lastIndex)
		r := ss.result
		put(r.Index)
		var flags byte
		if r.OK {
			flags |= 1
		}
		if r.Found {
			flags |= 2
		}
		bw.Write([]byte{byte(r.Op), flags})
		putBytes(r.Value)
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	_, err := cw.Write(binary.BigEndian.AppendUint32(nil, h.Sum32()))
	return cw.n, err
}

// Release drops the snapshot's references.
func (sn *snapshot) Release() {
	sn.data, sn.sessions = nil, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore replaces the Store's whole state with a snapshot written by
// WriteTo. A snapshot that is truncated, fails its checksum or has trailing
// bytes is rejected with an error wrapping ErrBadSnapshot, and the Store is
// left unchanged.
func (s *Store) Restore(r io.Reader) error {
	rd := &snapReader{r: bufio.NewReaderSize(r, 64<<10), h: crc32.New(castagnoli)}
	magic := rd.bytesN(uint64(len(snapshotMagic)))
	if rd.err == nil && !bytes.Equal(magic, snapshotMagic) {
		return fmt.Errorf("%w: bad header %q", ErrBadSnapshot, magic)
	}
	applied := rd.uvarint()
	nkeys := rd.uvarint()
	data := make(map[string][]byte, min(nkeys, 1<<16))
	for i := uint64(0); i < nkeys && rd.err == nil; i++ {
		k := string(rd.bytes())
		data[k] = rd.bytes()
	}
	nsess := rd.uvarint()
	sessions := make(map[uint64]session, min(nsess, 1<<16))
	for i := uint64(0); i < nsess && rd.err == nil; i++ {
		id := rd.uvarint()
		var ss session
		ss.seq = rd.uvarint()
		ss.lastIndex = rd.uvarint()
		ss.result.Index = rd.uvarint()
		opFlags := rd.bytesN(2)
		ss.result.Value = nilIfEmpty(rd.bytes())
		if rd.err != nil {
			break
		}
		if Op(opFlags[0]) == 0 || Op(opFlags[0]) >= opEnd || opFlags[1] > 3 {
			return fmt.Errorf("%w: bad session record for client %d", ErrBadSnapshot, id)
		}
		ss.result.Op = Op(opFlags[0])
		ss.result.OK = opFlags[1]&1 != 0
		ss.result.Found = opFlags[1]&2 != 0
		sessions[id] = ss
	}
	if rd.err != nil {
		return rd.err
	}
	want := rd.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(rd.r, sum[:]); err != nil {
		return fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := rd.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes after checksum", ErrBadSnapshot)
	}
	s.mu.Lock()
	s.data, s.sessions, s.applied, s.shared = data, sessions, applied, false
	s.mu.Unlock()
	return nil
}

// snapReader decodes a snapshot stream, hashing every byte it reads and
// remembering the first error.
type snapReader struct {
	r   *bufio.Reader
	h   hash.Hash32
	err error
}

func (d *snapReader) fail(err error) {
	if d.err == nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("truncated")
		}
		d.err = fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
}

func (d *snapReader) ReadByte() (byte, error) {
	b, err := d.r.ReadByte()
	if err == nil {
		d.h.Write([]byte{b})
	}
	return b, err
}

func (d *snapReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d)
	if err != nil {
		d.fail(err)
	}
	return v
}

// bytesN reads exactly n bytes. Memory grows with the bytes actually read,
// so a corrupt length cannot force a huge allocation.
func (d *snapReader) bytesN(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n <= 64<<10 {
		b := make([]byte, n)
		if _, err := io.ReadFull(d.r, b); err != nil {
			d.fail(err)
			return nil
		}
		d.h.Write(b)
		return b
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(io.MultiWriter(&buf, d.h), d.r, int64(min(n, 1<<62))); err != nil {
		d.fail(err)
		return nil
	}
	return buf.Bytes()
}

func (d *snapReader) bytes() []byte { return d.bytesN(d.uvarint()) }
