package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// messageVersion is the first byte of every encoded Message. A decoder
// refuses versions it does not know.
const messageVersion = 1

// ErrCorrupt wraps every decoding failure of a Message or Configuration.
var ErrCorrupt = errors.New("raft: corrupt encoding")

// MarshalBinary encodes m in the stable binary format every transport
// shares: a version byte followed by the fields as unsigned varints and
// length-prefixed byte strings.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.encodedSizeHint()))
}

func (m *Message) encodedSizeHint() int {
	n := 64 + len(m.SnapshotData) + 16*len(m.Snapshot.Config.Servers)
	for i := range m.Entries {
		n += 24 + len(m.Entries[i].Data)
	}
	return n
}

// AppendBinary appends the encoding of m to b (see MarshalBinary).
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, messageVersion, byte(m.Type))
	b = binary.AppendUvarint(b, uint64(m.From))
	b = binary.AppendUvarint(b, uint64(m.To))
	b = binary.AppendUvarint(b, m.Term)
	b = binary.AppendUvarint(b, m.LogTerm)
	b = binary.AppendUvarint(b, m.Index)
	b = binary.AppendUvarint(b, m.Commit)
	var flags byte
	if m.Reject {
		flags |= 1
	}
	if m.SnapshotDone {
		flags |= 2
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.RejectHint)
	b = binary.AppendUvarint(b, m.Context)
	b = binary.AppendUvarint(b, uint64(len(m.Entries)))
	for i := range m.Entries {
		e := &m.Entries[i]
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	b = binary.AppendUvarint(b, m.Snapshot.Index)
	b = binary.AppendUvarint(b, m.Snapshot.Term)
	b = appendConfiguration(b, m.Snapshot.Config)
	b = binary.AppendUvarint(b, m.SnapshotOffset)
	b = binary.AppendUvarint(b, uint64(len(m.SnapshotData)))
	b = append(b, m.SnapshotData...)
	return b, nil
}

// UnmarshalBinary decodes data produced by MarshalBinary into m. It checks
// every length against the input, so corrupt or hostile input yields an
// error wrapping ErrCorrupt, never a panic or an allocation larger than
// data. m keeps no reference to data.
func (m *Message) UnmarshalBinary(data []byte) error {
	d := decoder{buf: data}
	if v := d.byte(); v != messageVersion && d.err == nil {
		return fmt.Errorf("%w: unknown message version %d", ErrCorrupt, v)
	}
	var out Message
	out.Type = MessageType(d.byte())
	out.From = NodeID(d.uvarint())
	out.To = NodeID(d.uvarint())
	out.Term = d.uvarint()
	out.LogTerm = d.uvarint()
	out.Index = d.uvarint()
	out.Commit = d.uvarint()
	flags := d.byte()
	out.Reject = flags&1 != 0
	out.SnapshotDone = flags&2 != 0
	out.RejectHint = d.uvarint()
	out.Context = d.uvarint()
	// Each entry takes at least 4 bytes, which bounds the count.
	n := d.count(4)
	if n > 0 {
		out.Entries = make([]Entry, n)
		// Copy all entry data into one allocation no larger than data.
		store := make([]byte, 0, len(d.buf)-d.off)
		for i := range out.Entries {
			e := &out.Entries[i]
			e.Index = d.uvarint()
			e.Term = d.uvarint()
			e.Type = EntryType(d.byte())
			raw := d.bytes()
			if raw != nil {
				start := len(store)
				store = append(store, raw...)
				e.Data = store[start:len(store):len(store)]
			}
		}
	}
	out.Snapshot.Index = d.uvarint()
	out.Snapshot.Term = d.uvarint()
	out.Snapshot.Config = d.configuration()
	out.SnapshotOffset = d.uvarint()
	if raw := d.bytes(); len(raw) > 0 {
		out.SnapshotData = append([]byte(nil), raw...)
	}
	if d.err != nil {
		return d.err
	}
	if d.off != len(d.buf) {
		return fmt.Errorf("%w: %d trailing bytes after message", ErrCorrupt, len(d.buf)-d.off)
	}
	if out.Type == 0 || out.Type >= msgTypeEnd {
		return fmt.Errorf("%w: unknown message type %d", ErrCorrupt, out.Type)
	}
	*m = out
	return nil
}

// EncodeConfiguration returns the binary encoding of c stored in config
// entries.
func EncodeConfiguration(c Configuration) []byte {
	return appendConfiguration(nil, c)
}

// DecodeConfiguration decodes a configuration produced by
// EncodeConfiguration.
func DecodeConfiguration(data []byte) (Configuration, error) {
	d := decoder{buf: data}
	c := d.configuration()
	if d.err != nil {
		return Configuration{}, d.err
	}
	if d.off != len(d.buf) {
		return Configuration{}, fmt.Errorf("%w: %d trailing bytes after configuration", ErrCorrupt, len(d.buf)-d.off)
	}
	if err := c.Validate(); err != nil {
		return Configuration{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return c, nil
}

func appendConfiguration(b []byte, c Configuration) []byte {
	b = binary.AppendUvarint(b, uint64(len(c.Servers)))
	for _, s := range c.Servers {
		b = binary.AppendUvarint(b, uint64(s.ID))
		b = append(b, byte(s.Suffrage))
		b = binary.AppendUvarint(b, uint64(len(s.Addr)))
		b = append(b, s.Addr...)
	}
	return b
}

// decoder reads varints and length-prefixed strings, remembering the first
// error; after an error every read returns zero.
type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at offset %d", ErrCorrupt, what, d.off)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.buf) {
		d.fail("truncated")
		return 0
	}
	v := d.buf[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
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

// count reads an element count and checks that that many elements of at
// least minSize bytes each can fit in what is left.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64((len(d.buf)-d.off)/minSize) {
		d.fail(fmt.Sprintf("count %d exceeds remaining input", n))
		return 0
	}
	return int(n)
}

// bytes returns a length-prefixed byte string aliasing the input (nil when
// empty); callers copy what they keep.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.fail(fmt.Sprintf("length %d exceeds remaining input", n))
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

func (d *decoder) configuration() Configuration {
	n := d.count(3)
	if n == 0 {
		return Configuration{}
	}
	c := Configuration{Servers: make([]Server, n)}
	for i := range c.Servers {
		s := &c.Servers[i]
		s.ID = NodeID(d.uvarint())
		s.Suffrage = Suffrage(d.byte())
		s.Addr = string(d.bytes())
	}
	return c
}
