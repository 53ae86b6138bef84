package tcptransport_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"github.com/raftgo/raft/tcptransport/tlstest"
)

const clusterID = "test-cluster"

// testConfig is a transport configuration with short backoff so tests
// recover quickly.
func testConfig(id raft.NodeID, log *slog.Logger) tcptransport.Config {
	return tcptransport.Config{
		ID: id, ClusterID: clusterID, Logger: log,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
}

// listen starts a transport on a free loopback port (or addr if given).
func listen(t testing.TB, addr string, cfg tcptransport.Config) *tcptransport.Transport {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var tr *tcptransport.Transport
	var err error
	// A just-closed listener's port is normally free at once; retry
	// briefly in case the kernel disagrees.
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr, err = tcptransport.Listen(addr, cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return tr
}

// inbox records what a transport delivered.
type inbox struct {
	mu     sync.Mutex
	msgs   []raft.Message
	signal chan struct{}
}

func newInbox() *inbox { return &inbox{signal: make(chan struct{}, 1)} }

func (b *inbox) deliver(m raft.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) all() []raft.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

// has reports whether a message matching f arrived.
func (b *inbox) has(f func(raft.Message) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(b.msgs, f)
}

// sendUntil resends msg through tr until the inbox has a message with
// the same From and Context, or fails the test after d.
func sendUntil(t testing.TB, tr raft.Transport, in *inbox, msg raft.Message, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !in.has(func(m raft.Message) bool { return m.From == msg.From && m.Context == msg.Context }) {
		if time.Now().After(deadline) {
			t.Fatalf("message %v not delivered within %v", msg, d)
		}
		tr.Send([]raft.Message{msg})
		wait(in.signal, 50*time.Millisecond)
	}
}

func wait(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logRecorder is a slog.Handler that keeps the first records it sees and
// counts all of them by message and reason.
type logRecorder struct {
	st    *logState
	attrs []slog.Attr
}

type logState struct {
	mu      sync.Mutex
	records []string       // "LEVEL msg k=v ..." of the first maxKept records
	counts  map[string]int // by "msg: reason"
	total   int
}

const maxKept = 2000

func newLogRecorder() *logRecorder {
	return &logRecorder{st: &logState{counts: make(map[string]int)}}
}

func (h *logRecorder) logger() *slog.Logger                     { return slog.New(h) }
func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{st: h.st, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s", r.Level, r.Message)
	reason := ""
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		if a.Key == "reason" {
			reason = a.Value.String()
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.st.total++
	h.st.counts[r.Message+": "+reason]++
	if len(h.st.records) < maxKept {
		h.st.records = append(h.st.records, sb.String())
	}
	return nil
}

// find returns the latest kept record containing every one of subs.
func (h *logRecorder) find(subs ...string) (string, bool) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	for _, r := range slices.Backward(h.st.records) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(r, s)
		}
		if ok {
			return r, true
		}
	}
	return "", false
}

// waitLog waits until a record containing every one of subs is logged.
func (h *logRecorder) waitLog(t testing.TB, subs ...string) string {
	t.Helper()
	var rec string
	eventually(t, 10*time.Second, fmt.Sprintf("log record with %q", subs), func() bool {
		var ok bool
		rec, ok = h.find(subs...)
		return ok
	})
	return rec
}

// countReason counts records whose reason contains sub.
func (h *logRecorder) countReason(sub string) int {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	n := 0
	for k, c := range h.st.counts {
		if strings.Contains(k, sub) {
			n += c
		}
	}
	return n
}

// newCA makes a throwaway cluster CA.
func newCA(t testing.TB, name string) *tlstest.CA {
	t.Helper()
	ca, err := tlstest.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeTLS(t testing.TB, ca *tlstest.CA, id raft.NodeID) *tls.Config {
	t.Helper()
	c, err := ca.NodeTLS(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
