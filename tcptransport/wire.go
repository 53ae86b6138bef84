package tcptransport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/raftgo/raft"
)

// The wire protocol (see docs/transport.md). Every connection carries
// messages one way, from the dialer to the listener:
//
//	dialer -> listener  hello:  "RFTT" version(1) flags(1) from(8) to(8) clusterLen(1) cluster
//	listener -> dialer  status: 1 byte, statusOK or the reason for refusing
//	dialer -> listener  frames until either side closes
//
// A frame is length(4) crc32c(4) payload, big-endian, where payload is one
// raft.Message in its MarshalBinary encoding and crc32c its Castagnoli
// checksum. A frame of length 0 (with checksum 0) is a keepalive.
const (
	protocolVersion = 1
	helloFixedLen   = 4 + 1 + 1 + 8 + 8 + 1
	frameHeaderLen  = 8
	maxClusterIDLen = 255
)

var helloMagic = [4]byte{'R', 'F', 'T', 'T'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// handshake status codes, the listener's one-byte answer to a hello.
const (
	statusOK byte = iota
	statusBadVersion
	statusWrongCluster
	statusNotMember
	statusWrongReceiver
	statusCertMismatch
)

// statusText explains a refusal to the dialer's log.
func statusText(s byte) string {
	switch s {
	case statusOK:
		return "accepted"
	case statusBadVersion:
		return "unsupported protocol version"
	case statusWrongCluster:
		return "wrong cluster ID"
	case statusNotMember:
		return "sender is not a member of the listener's configuration"
	case statusWrongReceiver:
		return "listener is not the node that was dialed"
	case statusCertMismatch:
		return "certificate does not name the claimed node"
	}
	return fmt.Sprintf("unknown status %d", s)
}

// hello is the first thing a dialer sends.
type hello struct {
	version  byte
	from, to raft.NodeID
	cluster  string
}

func appendHello(b []byte, h hello) []byte {
	b = append(b, helloMagic[:]...)
	b = append(b, h.version, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(h.from))
	b = binary.BigEndian.AppendUint64(b, uint64(h.to))
	b = append(b, byte(len(h.cluster)))
	return append(b, h.cluster...)
}

// errBadMagic means the peer does not speak this protocol at all.
var errBadMagic = errors.New("bad magic: not a raft tcptransport peer")

// readHello reads a hello. It reads at most helloFixedLen+255 bytes.
func readHello(r io.Reader) (hello, error) {
	var fixed [helloFixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	if [4]byte(fixed[:4]) != helloMagic {
		return hello{}, errBadMagic
	}
	h := hello{
		version: fixed[4],
		from:    raft.NodeID(binary.BigEndian.Uint64(fixed[6:14])),
		to:      raft.NodeID(binary.BigEndian.Uint64(fixed[14:22])),
	}
	n := int(fixed[22])
	if n == 0 {
		return hello{}, errors.New("hello has an empty cluster ID")
	}
	cluster := make([]byte, n)
	if _, err := io.ReadFull(r, cluster); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	h.cluster = string(cluster)
	return h, nil
}

// appendFrame appends m as one frame to b. It returns b unchanged and an
// error if the encoded message is larger than maxFrame.
func appendFrame(b []byte, m *raft.Message, maxFrame int) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, frameHeaderLen)...)
	b, err := m.AppendBinary(b)
	if err != nil {
		return b[:start], err
	}
	n := len(b) - start - frameHeaderLen
	if n > maxFrame {
		return b[:start], &FrameTooLargeError{Size: n, Max: maxFrame, To: m.To, Type: m.Type}
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+frameHeaderLen:], castagnoli))
	return b, nil
}

// FrameTooLargeError reports a message whose encoding exceeds the
// configured maximum frame size; the message is dropped.
type FrameTooLargeError struct {
	Size, Max int
	To        raft.NodeID
	Type      raft.MessageType
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("tcptransport: %s to node %d encodes to %d bytes, more than Config.MaxFrameSize (%d); raise MaxFrameSize on every node or send smaller messages (raft Config.MaxSizePerMsg, snapshot chunk size)",
		e.Type, e.To, e.Size, e.Max)
}
