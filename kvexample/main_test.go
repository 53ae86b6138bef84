package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

func fastConfig() raft.Config {
	cfg := raft.DefaultConfig()
	cfg.TickInterval = 5 * time.Millisecond
	return cfg
}

func TestDemoFailoverKeepsAcknowledgedWrites(t *testing.T) {
	var out bytes.Buffer
	res, err := runDemo(context.Background(), &out, fastConfig())
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	if res.FirstLeader == raft.None || res.NewLeader == raft.None || res.NewLeader == res.FirstLeader {
		t.Fatalf("leaders %d -> %d: want two different leaders", res.FirstLeader, res.NewLeader)
	}
	if len(res.Acked) != 6 || res.Checked != 12 {
		t.Fatalf("acked %d writes, checked %d reads; want 6 and 12 (6 keys on 2 survivors)", len(res.Acked), res.Checked)
	}
	for _, want := range []string{"elected leader", "stopping leader", "linearizable read sees all 6 acknowledged keys", "done:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("timeline lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-nope"}, "not defined"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"demo with id", []string{"-demo", "-id", "1"}, "cannot be combined"},
		{"bad timeout", []string{"-timeout", "0s"}, "-timeout must be positive"},
		{"bad http address", []string{"-http", "nonsense"}, "-http"},
		{"id without listen", []string{"-id", "1", "-data", "d"}, "-listen is required"},
		{"id without data", []string{"-id", "1", "-listen", "127.0.0.1:7001"}, "-data is required"},
		{"peers and join", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers", "1=127.0.0.1:7001", "-join", "127.0.0.1:8080"}, "not both"},
		{"malformed peers", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers", "x=1"}, "is not id=host:port"},
		{"peers without self", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers", "2=127.0.0.1:7002"}, "must include this node"},
		{"half TLS", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-tls-cert", "c.pem"}, "mutual TLS"},
		{"half TLS without CA", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-tls-cert", "c.pem", "-tls-key", "k.pem"}, "mutual TLS"},
		{"ephemeral raft port", []string{"-id", "1", "-listen", "127.0.0.1:0", "-data", "d"}, "needs a fixed port"},
		{"separator in address", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-http", "a|b:1"}, "-http"},
		{"self address differs from listen", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers", "1=127.0.0.1:7009"}, "but -listen is"},
		{"peers-http incomplete", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers", "1=127.0.0.1:7001,2=127.0.0.1:7002", "-peers-http", "1=127.0.0.1:8080"}, "lacks node 2"},
		{"peers-http self differs from http", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-http", "127.0.0.1:8081", "-peers", "1=127.0.0.1:7001", "-peers-http", "1=127.0.0.1:8080"}, "but -http is"},
		{"peers-http without peers", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-peers-http", "1=127.0.0.1:8080"}, "only makes sense with -peers"},
		{"bad log level", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-log", "loud"}, "-log"},
		{"missing certificate files", []string{"-id", "1", "-listen", "127.0.0.1:7001", "-data", "d", "-tls-cert", "nope.pem", "-tls-key", "nope-key.pem", "-tls-ca", "ca.pem"}, "-tls-cert"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestServeLocalAnswersOverHTTPAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urlsc := make(chan []string, 1)
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serveLocal(ctx, options{httpAddr: "127.0.0.1:0", timeout: 5 * time.Second}, &out, func(u []string) { urlsc <- u })
	}()
	var urls []string
	select {
	case urls = <-urlsc:
	case err := <-done:
		t.Fatalf("serveLocal returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serveLocal never became ready")
	}
	if len(urls) != 3 {
		t.Fatalf("got %d URLs, want 3", len(urls))
	}
	// A write sent to every node lands (followers redirect, the client
	// follows), and every node reads it back linearizably.
	for i, u := range urls {
		val := "v" + string(rune('0'+i))
		req, _ := http.NewRequest(http.MethodPut, u+"/kv/hello", strings.NewReader(val))
		resp := mustDo(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT via %s: %d", u, resp.StatusCode)
		}
		for _, v := range urls {
			req, _ := http.NewRequest(http.MethodGet, v+"/kv/hello", nil)
			resp := mustDo(t, req)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != val {
				t.Fatalf("GET via %s after PUT via %s: %d %q, want 200 %q", v, u, resp.StatusCode, body, val)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodGet, urls[0]+"/status", nil)
	resp := mustDo(t, req)
	var st struct {
		Members []struct{ ID uint64 } `json:"members"`
		Leader  uint64                `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st.Members) != 3 || st.Leader == 0 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	for _, want := range []string{"curl -L -X PUT", "/kv/hello", "/status", urls[0]} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, out.String())
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serveLocal: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serveLocal did not stop after cancel")
	}
}

func mustDo(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
