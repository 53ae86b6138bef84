package tcptransport

import (
	"bytes"
	"net"
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
	h := hello{version: protocolVersion, from: 7, to: 1<<64 - 1, cluster: "prod-eu"}
	got, err := readHello(bytes.NewReader(appendHello(nil, h)))
	if err != nil || got != h {
		t.Fatalf("got %+v, %v; want %+v", got, err, h)
	}
	for name, b := range map[string][]byte{
		"bad magic":     append([]byte("HTTP"), make([]byte, 30)...),
		"empty cluster": appendHello(nil, hello{version: 1, from: 1, to: 2})[:helloFixedLen],
		"truncated":     appendHello(nil, h)[:helloFixedLen+3],
	} {
		if _, err := readHello(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
