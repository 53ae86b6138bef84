package kvstore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Op names a command of the key-value state machine.
type Op uint8

const (
	// OpPut sets Key to Value.
	OpPut Op = iota + 1
	// OpDelete removes Key.
	OpDelete
	// OpCAS sets Key to Value only if its current value is Expect (or, when
	// ExpectAbsent is set, only if Key does not exist).
	OpCAS
	// OpGet reads Key through the log. A linearizable read is cheaper with
	// raft.Node.Read followed by Store.Get; OpGet exists for clients that
	// want a read ordered with their writes in one session.
	OpGet
	opEnd
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	case OpGet:
		return "get"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Command is one request to the state machine. ClientID and Seq make a
// write exactly-once for a retrying client: a client numbers its requests
// 1, 2, 3, ... and keeps one in flight at a time; a command whose Seq equals
// the client's last applied Seq is answered with the stored result instead
// of being applied again. ClientID 0 means no deduplication.
type Command struct {
	Op           Op
	ClientID     uint64
	Seq          uint64
	Key          string
	Value        []byte // OpPut, OpCAS: the new value
	Expect       []byte // OpCAS: the value the key must have
	ExpectAbsent bool   // OpCAS: the key must not exist (Expect ignored)
}

// commandVersion is the first byte of every encoded Command.
const commandVersion = 1

// ErrBadCommand wraps every failure to decode a Command.
var ErrBadCommand = errors.New("kvstore: malformed command")

// MarshalBinary encodes c in the format Apply decodes: a version byte, the
// op, then unsigned varints and length-prefixed strings.
func (c Command) MarshalBinary() ([]byte, error) {
	if c.Op == 0 || c.Op >= opEnd {
		return nil, fmt.Errorf("%w: unknown op %d", ErrBadCommand, c.Op)
	}
	if c.ClientID == 0 && c.Seq != 0 {
		return nil, fmt.Errorf("%w: a sequence number needs a client ID", ErrBadCommand)
	}
	if c.ClientID != 0 && c.Seq == 0 {
		return nil, fmt.Errorf("%w: sequence numbers start at 1", ErrBadCommand)
	}
	b := make([]byte, 0, 24+len(c.Key)+len(c.Value)+len(c.Expect))
	b = append(b, commandVersion, byte(c.Op))
	b = binary.AppendUvarint(b, c.ClientID)
	b = binary.AppendUvarint(b, c.Seq)
	b = appendBytes(b, []byte(c.Key))
	b = appendBytes(b, c.Value)
	var flags byte
	if c.ExpectAbsent {
		flags = 1
	}
	b = append(b, flags)
	b = appendBytes(b, c.Expect)
	return b, nil
}

// UnmarshalBinary decodes data produced by MarshalBinary. Corrupt input
// yields an error wrapping ErrBadCommand, never a panic. c keeps no
// reference to data.
func (c *Command) UnmarshalBinary(data []byte) error {
	d := decoder{buf: data}
	if v := d.byte(); d.err == nil && v != commandVersion {
		return fmt.Errorf("%w: unknown version %d", ErrBadCommand, v)
	}
	var out Command
	out.Op = Op(d.byte())
	out.ClientID = d.uvarint()
	out.Seq = d.uvarint()
	out.Key = string(d.bytes())
	out.Value = cloneOrNil(d.bytes())
	flags := d.byte()
	out.Expect = cloneOrNil(d.bytes())
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(d.buf))
	}
	if out.Op == 0 || out.Op >= opEnd {
		return fmt.Errorf("%w: unknown op %d", ErrBadCommand, out.Op)
	}
	if flags > 1 {
		return fmt.Errorf("%w: unknown flags %#x", ErrBadCommand, flags)
	}
	if (out.ClientID == 0) != (out.Seq == 0) {
		return fmt.Errorf("%w: client ID and sequence number must be set together", ErrBadCommand)
	}
	out.ExpectAbsent = flags == 1
	*c = out
	return nil
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func cloneOrNil(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// decoder reads varints and length-prefixed strings, remembering the first
// error so callers check once.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrBadCommand, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.buf) < 1 {
		d.fail("byte")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes returns a length-prefixed string aliasing the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("string")
		return nil
	}
	s := d.buf[:n:n]
	d.buf = d.buf[n:]
	return s
}
