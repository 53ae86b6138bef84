package tcptransport

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// countingConn is a net.Conn that records the size of every Write.
type countingConn struct {
	net.Conn
	writes []int
	buf    bytes.Buffer
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, len(b))
	return c.buf.Write(b)
}
func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func testPeer(t *testing.T, cfg Config) *peer {
	t.Helper()
	cfg.ID, cfg.ClusterID = 1, "c"
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newPeer(newTransport(nil, cfg), 2, "x", nil)
}

func TestWriteBatchCoalescesFrames(t *testing.T) {
	p := testPeer(t, Config{MaxBatchBytes: 4 << 10})
	var batch []raft.Message
	for i := range 100 {
		batch = append(batch, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 3, Context: uint64(i)})
	}
	c := &countingConn{}
	if _, err := p.writeBatch(c, batch, nil); err != nil {
		t.Fatal(err)
	}
	if len(c.writes) != 1 {
		t.Errorf("100 heartbeats took %d writes, want 1", len(c.writes))
	}
	// Large messages are split across writes at MaxBatchBytes.
	c = &countingConn{}
	big := raft.Message{Type: raft.MsgApp, From: 1, To: 2, Entries: []raft.Entry{{Index: 1, Data: make([]byte, 3<<10)}}}
	if _, err := p.writeBatch(c, []raft.Message{big, big, big, big}, nil); err != nil {
		t.Fatal(err)
	}
	if len(c.writes) < 2 || len(c.writes) > 4 {
		t.Errorf("4 frames of 3 KiB with MaxBatchBytes 4 KiB took %d writes", len(c.writes))
	}
	// The frames decode back to the messages, in order.
	data := c.buf.Bytes()
	for i := 0; len(data) > 0; i++ {
		n := int(uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3]))
		var m raft.Message
		if err := m.UnmarshalBinary(data[frameHeaderLen : frameHeaderLen+n]); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		data = data[frameHeaderLen+n:]
	}
	if s := p.stat.sent.Load(); s != 104 {
		t.Errorf("sent counter %d, want 104", s)
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	p := testPeer(t, Config{MinBackoff: 10 * time.Millisecond, MaxBackoff: 160 * time.Millisecond})
	for failures, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 5: 160, 6: 160, 50: 160} {
		want *= time.Millisecond
		for range 100 {
			if d := p.backoff(failures); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", failures, d, want/2, want)
			}
		}
	}
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[p.backoff(4)] = true
	}
	if len(seen) < 10 {
		t.Errorf("backoff has little jitter: %d distinct values in 100 draws", len(seen))
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []hello{
		{version: protocolVersion, from: 7, to: 1<<64 - 1, cluster: "prod-eu", addr: "10.0.0.7:7001"},
		{version: protocolVersion, from: 1, to: 2, cluster: "c"}, // no address advertised
		{version: protocolVersion, from: 1, to: 2, cluster: strings.Repeat("c", maxClusterIDLen), addr: strings.Repeat("h", maxAddrLen-5) + ":7001"},
	} {
		b := appendHello(nil, h)
		if len(b) > maxHelloLen {
			t.Errorf("hello of %d bytes, more than maxHelloLen %d", len(b), maxHelloLen)
		}
		// readHello reads the hello and not a byte more.
		r := bytes.NewReader(append(b, "frames"...))
		got, err := readHello(r)
		if err != nil || got != h {
			t.Fatalf("got %+v, %v; want %+v", got, err, h)
		}
		if r.Len() != len("frames") {
			t.Errorf("readHello left %d bytes after the hello, want %d", r.Len(), len("frames"))
		}
	}
}

func TestHelloRejectsBadFraming(t *testing.T) {
	h := hello{version: protocolVersion, from: 1, to: 2, cluster: "prod", addr: "127.0.0.1:7001"}
	good := appendHello(nil, h)
	flagged := appendHello(nil, hello{version: protocolVersion, flags: 1, from: 1, to: 2, cluster: "prod"})
	for _, tt := range []struct {
		name, want string
		b          []byte
	}{
		{"bad magic", "bad magic", append([]byte("HTTP"), make([]byte, 30)...)},
		{"empty cluster", "empty cluster ID", appendHello(nil, hello{version: protocolVersion, from: 1, to: 2})},
		{"truncated fixed part", "EOF", good[:helloFixedLen-1]},
		{"truncated cluster", "EOF", good[:helloFixedLen+2]},
		{"no address length", "EOF", good[:helloFixedLen+len("prod")]},
		{"truncated address", "EOF", good[:len(good)-1]},
		{"unknown flags", "unknown flags 0x1", flagged},
	} {
		if _, err := readHello(bytes.NewReader(tt.b)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
	}
	// Another version is returned after its cluster ID, for the handshake
	// to refuse with a status; its remaining bytes are not interpreted.
	old := appendHello(nil, hello{version: 1, from: 1, to: 2, cluster: "prod"})
	old = old[:len(old)-1] // version 1 had no address field
	got, err := readHello(bytes.NewReader(old))
	if err != nil || got.version != 1 || got.cluster != "prod" || got.from != 1 {
		t.Errorf("version 1 hello read as %+v, %v", got, err)
	}
}

func TestCheckAdvertiseAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:7001", "[::1]:7001", "node-1.raft.internal:65535", "[fe80::1%eth0]:1"} {
		if err := checkAdvertiseAddr(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, tt := range []struct{ addr, want string }{
		{"", "not host:port"},
		{"127.0.0.1", "not host:port"},
		{":7001", "no host"},
		{"0.0.0.0:7001", "names no particular host"},
		{"[::]:7001", "names no particular host"},
		{"127.0.0.1:0", "want 1 to 65535"},
		{"127.0.0.1:65536", "want 1 to 65535"},
		{"127.0.0.1:http", "want 1 to 65535"},
		{"127.0.0.1:-1", "want 1 to 65535"},
		{"a b:1", "not printable ASCII"},
		{"a\x00:1", "not printable ASCII"},
		{"h\xc3\xa9:1", "not printable ASCII"},
		{strings.Repeat("h", 251) + ":7001", "more than 255"},
	} {
		if err := checkAdvertiseAddr(tt.addr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one saying %q", tt.addr, err, tt.want)
		}
	}
}

func TestDefaultAdvertiseAddr(t *testing.T) {
	for _, tt := range []struct {
		la   net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7001}, "127.0.0.1:7001"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 7001}, "[::1]:7001"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 7001}, ""},        // 0.0.0.0:7001
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7001}, ""}, // [::]:7001
		{&net.TCPAddr{Port: 7001}, ""},                          // :7001
		{&net.UnixAddr{Name: "/tmp/raft.sock", Net: "unix"}, ""},
		{nil, ""},
	} {
		if got := defaultAdvertiseAddr(tt.la); got != tt.want {
			t.Errorf("defaultAdvertiseAddr(%v) = %q, want %q", tt.la, got, tt.want)
		}
	}
}
