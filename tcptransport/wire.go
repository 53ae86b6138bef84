package tcptransport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strconv"

	"github.com/raftgo/raft"
)

// The wire protocol (see docs/transport.md). Every connection carries
// messages one way, from the dialer to the listener:
//
//	dialer -> listener  hello:  "RFTT" version(1) flags(1) from(8) to(8)
//	                            clusterLen(1) cluster addrLen(1) addr
//	listener -> dialer  status: 1 byte, statusOK or the reason for refusing
//	dialer -> listener  frames until either side closes
//
// addr is the dialer's advertised listen address ("host:port", or empty
// when it advertises none), so that a listener that does not know the
// dialer yet (a node waiting to be added) can connect back to it.
//
// A frame is length(4) crc32c(4) payload, big-endian, where payload is one
// raft.Message in its MarshalBinary encoding and crc32c its Castagnoli
// checksum. A frame of length 0 (with checksum 0) is a keepalive.
const (
	protocolVersion = 2
	helloFixedLen   = 4 + 1 + 1 + 8 + 8 + 1
	frameHeaderLen  = 8
	maxClusterIDLen = 255
	maxAddrLen      = 255
	// maxHelloLen bounds what readHello reads.
	maxHelloLen = helloFixedLen + maxClusterIDLen + 1 + maxAddrLen
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
	statusBadAddr
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
	case statusBadAddr:
		return "advertised address is malformed"
	}
	return fmt.Sprintf("unknown status %d", s)
}

// hello is the first thing a dialer sends.
type hello struct {
	version  byte
	flags    byte
	from, to raft.NodeID
	cluster  string
	addr     string // the dialer's advertised address, "" if none
}

// appendHello encodes h. The caller guarantees that cluster and addr are at
// most 255 bytes each (Config validation does).
func appendHello(b []byte, h hello) []byte {
	b = append(b, helloMagic[:]...)
	b = append(b, h.version, h.flags)
	b = binary.BigEndian.AppendUint64(b, uint64(h.from))
	b = binary.BigEndian.AppendUint64(b, uint64(h.to))
	b = append(b, byte(len(h.cluster)))
	b = append(b, h.cluster...)
	b = append(b, byte(len(h.addr)))
	return append(b, h.addr...)
}

// errBadMagic means the peer does not speak this protocol at all.
var errBadMagic = errors.New("bad magic: not a raft tcptransport peer")

// readHello reads a hello, at most maxHelloLen bytes. It checks the
// framing only; the handshake judges the contents (version, cluster,
// identity, address), so that it can answer with a status. A hello of
// another version is returned once its cluster ID is read (that prefix is
// the same in every version so far), without the rest, whose layout may
// differ.
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
		flags:   fixed[5],
		from:    raft.NodeID(binary.BigEndian.Uint64(fixed[6:14])),
		to:      raft.NodeID(binary.BigEndian.Uint64(fixed[14:22])),
	}
	n := int(fixed[22])
	if n == 0 {
		return hello{}, errors.New("hello has an empty cluster ID")
	}
	var buf [max(maxClusterIDLen, maxAddrLen) + 1]byte
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	h.cluster = string(buf[:n])
	if h.version != protocolVersion {
		return h, nil
	}
	if h.flags != 0 {
		return hello{}, fmt.Errorf("hello has unknown flags %#x", h.flags)
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	k := int(buf[0])
	if _, err := io.ReadFull(r, buf[:k]); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	h.addr = string(buf[:k])
	return h, nil
}

// checkAdvertiseAddr reports whether addr can be advertised to peers and
// dialed by them: "host:port" with a non-empty host that is not an
// unspecified IP (0.0.0.0, ::), a decimal port from 1 to 65535, at most
// 255 bytes, printable ASCII only.
func checkAdvertiseAddr(addr string) error {
	if len(addr) > maxAddrLen {
		return fmt.Errorf("address is %d bytes, more than %d", len(addr), maxAddrLen)
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("address %q has a byte %#x that is not printable ASCII", addr, c)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return fmt.Errorf("address %q names no particular host; peers cannot dial it", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("address %q has port %q, want 1 to 65535", addr, port)
	}
	return nil
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
