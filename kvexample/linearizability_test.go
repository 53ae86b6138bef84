package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// kvInput is one client operation on one key, as porcupine sees it.
type kvInput struct {
	op     string // "get", "put", "delete" or "cas"
	key    string
	value  string // put, cas: the new value
	expect string // cas: the value the key must hold
}

// kvOutput is an operation's outcome.
type kvOutput struct {
	// unknown marks a write whose fate the client never learned (504,
	// lost connection, timeout): it may or may not have taken effect.
	// Such operations never return (porcupine's convention), so the
	// checker may place them anywhere after their call, including after
	// everything else, which is the same as not at all.
	unknown bool
	ok      bool   // cas: it swapped
	found   bool   // get: the key exists; put, delete: it existed before; failed cas: it exists
	value   string // get: the value; failed cas: the current value
}

// kvState is one key's state.
type kvState struct {
	exists bool
	value  string
}

// kvModel is the key-value store's sequential specification, partitioned
// by key.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(kvState), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "get":
			return out.found == s.exists && out.value == s.value, s
		case "put":
			return out.unknown || out.found == s.exists, kvState{exists: true, value: in.value}
		case "delete":
			return out.unknown || out.found == s.exists, kvState{}
		case "cas":
			match := s.exists && s.value == in.expect
			if !out.unknown && out.ok != match {
				return false, s
			}
			if match {
				return true, kvState{exists: true, value: in.value}
			}
			return out.unknown || out.found == s.exists && out.value == s.value, s
		}
		return false, s
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		var res string
		switch {
		case out.unknown:
			res = "unknown"
		case in.op == "get" && !out.found:
			res = "not found"
		case in.op == "get":
			res = strconv.Quote(out.value)
		case in.op == "cas" && !out.ok:
			res = fmt.Sprintf("failed, found=%t current=%q", out.found, out.value)
		default:
			res = fmt.Sprintf("ok, found before=%t", out.found)
		}
		switch in.op {
		case "put":
			return fmt.Sprintf("put(%s, %q) -> %s", in.key, in.value, res)
		case "cas":
			return fmt.Sprintf("cas(%s, %q -> %q) -> %s", in.key, in.expect, in.value, res)
		default:
			return fmt.Sprintf("%s(%s) -> %s", in.op, in.key, res)
		}
	},
	DescribeState: func(state any) string {
		s := state.(kvState)
		if !s.exists {
			return "absent"
		}
		return strconv.Quote(s.value)
	},
}

// TestKVModelCatchesViolations checks the checker: a lost write and a
// stale read are refused, an unknown write may or may not take effect.
func TestKVModelCatchesViolations(t *testing.T) {
	put := func(client int, v string, call, ret int64, out kvOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: kvInput{op: "put", key: "k", value: v}, Call: call, Output: out, Return: ret}
	}
	get := func(client int, v string, found bool, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: kvInput{op: "get", key: "k"}, Call: call, Output: kvOutput{found: found, value: v}, Return: ret}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"read sees the acknowledged write", []porcupine.Operation{put(0, "a", 0, 10, kvOutput{}), get(1, "a", true, 20, 30)}, true},
		{"acknowledged write lost", []porcupine.Operation{put(0, "a", 0, 10, kvOutput{}), get(1, "", false, 20, 30)}, false},
		{"stale read after overwrite", []porcupine.Operation{put(0, "a", 0, 10, kvOutput{}), put(0, "b", 11, 20, kvOutput{found: true}), get(1, "a", true, 30, 40)}, false},
		{"unknown write seen", []porcupine.Operation{put(0, "a", 0, math.MaxInt64, kvOutput{unknown: true}), get(1, "a", true, 20, 30)}, true},
		{"unknown write not seen", []porcupine.Operation{put(0, "a", 0, math.MaxInt64, kvOutput{unknown: true}), get(1, "", false, 20, 30)}, true},
		{"put claims the key existed", []porcupine.Operation{put(0, "a", 0, 10, kvOutput{found: true})}, false},
		{"cas swaps", []porcupine.Operation{
			put(0, "a", 0, 10, kvOutput{}),
			{Input: kvInput{op: "cas", key: "k", expect: "a", value: "b"}, Call: 20, Output: kvOutput{ok: true}, Return: 30},
			get(1, "b", true, 40, 50)}, true},
		{"cas fails that should swap", []porcupine.Operation{
			put(0, "a", 0, 10, kvOutput{}),
			{Input: kvInput{op: "cas", key: "k", expect: "a", value: "b"}, Call: 20, Output: kvOutput{found: true, value: "a"}, Return: 30}}, false},
	}
	for _, tc := range cases {
		if got := porcupine.CheckOperations(kvModel, tc.ops); got != tc.want {
			t.Errorf("%s: linearizable = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// history collects the operations of concurrent clients.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// e2eStats counts what the run did, so the test can insist it did
// something.
type e2eStats struct {
	acked, unknown, notApplied, reads         atomic.Int64
	kills, restarts, transfers, transferTries atomic.Int64
}

// kvClient is one closed-loop client with an exactly-once session.
type kvClient struct {
	t      *testing.T
	id     int
	seq    uint64
	rng    *rand.Rand
	c      *procCluster
	h      *history
	stats  *e2eStats
	http   *http.Client
	giveUp time.Time // after this, a write whose outcome is unknown stays unknown
}

func (cl *kvClient) node() *proc {
	return cl.c.procs[1+cl.rng.IntN(len(cl.c.procs))]
}

// get performs a linearizable read; failed reads (which have no effect)
// are not recorded. It reports whether the read was answered.
func (cl *kvClient) get(ctx context.Context, key string, p *proc) bool {
	call := cl.h.now()
	code, body, err := httpDo(ctx, cl.http, http.MethodGet, "http://"+p.httpAddr+"/kv/"+key, "")
	ret := cl.h.now()
	var out kvOutput
	switch {
	case err != nil:
		return false
	case code == http.StatusOK:
		out = kvOutput{found: true, value: string(body)}
	case code == http.StatusNotFound:
	case code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return false
	default:
		cl.t.Errorf("GET %s on node %d: unexpected %d %s", key, p.id, code, body)
		return false
	}
	cl.stats.reads.Add(1)
	cl.h.add(porcupine.Operation{ClientId: cl.id, Input: kvInput{op: "get", key: key}, Call: call, Output: out, Return: ret})
	return true
}

// write performs a put, delete or cas with the next sequence number of
// this client's session. Until the outcome is known it retries the same
// (client, seq) at random nodes: the state machine applies it at most
// once and answers a repeat with the stored result.
func (cl *kvClient) write(in kvInput) {
	cl.seq++
	q := url.Values{"client": {strconv.Itoa(cl.id)}, "seq": {strconv.FormatUint(cl.seq, 10)}}
	method, body := http.MethodPut, in.value
	switch in.op {
	case "delete":
		method, body = http.MethodDelete, ""
	case "cas":
		q.Set("if", in.expect)
	}
	path := "/kv/" + in.key + "?" + q.Encode()
	op := porcupine.Operation{ClientId: cl.id, Input: in, Call: cl.h.now()}
	maybeApplied := false
	for {
		p := cl.node()
		code, resp, err := httpDo(context.Background(), cl.http, method, "http://"+p.httpAddr+path, body)
		switch {
		case err == nil && code == http.StatusOK:
			var r struct{ Found bool }
			if err := json.Unmarshal(resp, &r); err != nil {
				cl.t.Errorf("%s %s: bad answer %q", method, path, resp)
				return
			}
			op.Output, op.Return = kvOutput{ok: true, found: r.Found}, cl.h.now()
			cl.h.add(op)
			cl.stats.acked.Add(1)
			return
		case err == nil && code == http.StatusConflict && in.op == "cas":
			var r struct {
				Found   bool
				Current *string
			}
			if err := json.Unmarshal(resp, &r); err != nil {
				cl.t.Errorf("%s %s: bad answer %q", method, path, resp)
				return
			}
			op.Output, op.Return = kvOutput{found: r.Found}, cl.h.now()
			if r.Current != nil {
				op.Output = kvOutput{found: r.Found, value: *r.Current}
			}
			cl.h.add(op)
			cl.stats.acked.Add(1)
			return
		case err == nil && code == http.StatusServiceUnavailable:
			if !maybeApplied {
				// Surely not applied: as if never issued.
				cl.stats.notApplied.Add(1)
				return
			}
		case err != nil || code == http.StatusGatewayTimeout:
			maybeApplied = true
		default:
			cl.t.Errorf("%s %s on node %d: unexpected %d %s", method, path, p.id, code, resp)
			return
		}
		if time.Now().After(cl.giveUp) {
			op.Output, op.Return = kvOutput{unknown: true}, math.MaxInt64
			cl.h.add(op)
			cl.stats.unknown.Add(1)
			return
		}
		time.Sleep(50 * time.Millisecond) // pace retries while the cluster recovers
	}
}

// run issues random operations on keys until ctx ends.
func (cl *kvClient) run(ctx context.Context, keys []string) {
	n := 0
	for ctx.Err() == nil {
		key := keys[cl.rng.IntN(len(keys))]
		n++
		switch r := cl.rng.IntN(100); {
		case r < 40:
			cl.get(ctx, key, cl.node())
		case r < 75:
			cl.write(kvInput{op: "put", key: key, value: fmt.Sprintf("c%d-%d", cl.id, n)})
		case r < 85:
			cl.write(kvInput{op: "delete", key: key})
		default:
			// Expect a value some client wrote recently, so some swaps
			// succeed.
			expect := fmt.Sprintf("c%d-%d", 1+cl.rng.IntN(4), max(1, n-cl.rng.IntN(8)))
			cl.write(kvInput{op: "cas", key: key, expect: expect, value: fmt.Sprintf("c%d-%d", cl.id, n)})
		}
	}
}

// chaos kills (SIGKILL) and restarts nodes and transfers leadership until
// ctx ends, one fault at a time so that a majority is up.
func chaos(ctx context.Context, t *testing.T, c *procCluster, stats *e2eStats, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	client := &http.Client{Timeout: 5 * time.Second}
	pause := func(min, max time.Duration) bool {
		tm := time.NewTimer(min + time.Duration(rng.Int64N(int64(max-min))))
		defer tm.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-tm.C:
			return true
		}
	}
	for step := 0; ; step++ {
		if !pause(500*time.Millisecond, 1200*time.Millisecond) {
			return
		}
		switch step % 4 {
		case 0, 2:
			victim := c.procs[1+rng.IntN(len(c.procs))]
			if step%4 == 0 {
				if lead, err := c.agreedLeader(); err == nil {
					victim = c.procs[lead]
				}
			}
			t.Logf("chaos: SIGKILL node %d", victim.id)
			if victim.kill() {
				stats.kills.Add(1)
			}
			pause(200*time.Millisecond, 1000*time.Millisecond)
			t.Logf("chaos: restart node %d", victim.id)
			if err := victim.start(); err != nil {
				t.Errorf("chaos: %v", err)
				return
			}
			stats.restarts.Add(1)
		default:
			p := c.procs[1+rng.IntN(len(c.procs))]
			stats.transferTries.Add(1)
			code, body, err := httpDo(ctx, client, http.MethodPost, "http://"+p.httpAddr+"/leader/transfer", "")
			t.Logf("chaos: leader transfer via node %d: %d %s %v", p.id, code, bytes.TrimSpace(body), err)
			if err == nil && code == http.StatusOK {
				stats.transfers.Add(1)
			}
		}
	}
}

// e2eDuration is how long clients and faults run: KVEXAMPLE_E2E_SECONDS,
// default 12.
func e2eDuration(t *testing.T) time.Duration {
	if s := os.Getenv("KVEXAMPLE_E2E_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("KVEXAMPLE_E2E_SECONDS=%q: want a positive number of seconds", s)
		}
		return time.Duration(n) * time.Second
	}
	return 12 * time.Second
}

// TestProcessesStayLinearizableUnderKillsAndTransfers runs three kvexample
// processes over loopback TCP with durable storage, drives concurrent
// clients over HTTP while nodes are SIGKILLed and restarted and leadership
// is transferred, then reads every key from every node. The whole history
// must be linearizable, which includes that no acknowledged write was lost.
func TestProcessesStayLinearizableUnderKillsAndTransfers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with subprocesses")
	}
	dur := e2eDuration(t)
	bin := buildKV(t)
	// Small snapshots, so restarts also restore from snapshots and a
	// lagging node may be sent one.
	c := newProcCluster(t, bin, 3, func(int) []string { return []string{"-snapshot-every", "200"} })
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	c.startAll()
	c.waitLeader(30 * time.Second)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, running %v (KVEXAMPLE_E2E_SECONDS to change)", seed, dur)
	h := &history{start: time.Now()}
	var stats e2eStats
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	giveUp := time.Now().Add(dur + 15*time.Second)
	for i := 1; i <= 4; i++ {
		cl := &kvClient{t: t, id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))), c: c, h: h, stats: &stats,
			http: &http.Client{Timeout: 5 * time.Second}, giveUp: giveUp}
		wg.Go(func() { cl.run(ctx, keys) })
	}
	wg.Go(func() { chaos(ctx, t, c, &stats, seed) })
	wg.Wait()

	// Every node back up; each reads every key linearizably.
	for _, p := range c.procs {
		if !p.running() {
			p.mustStart(t)
		}
	}
	c.waitLeader(30 * time.Second)
	final := &kvClient{t: t, id: 99, c: c, h: h, stats: &stats, http: &http.Client{Timeout: 5 * time.Second}}
	for id := 1; id <= len(c.procs); id++ {
		for _, key := range keys {
			waitFor(t, 30*time.Second, fmt.Sprintf("final read of %s on node %d", key, id), func() error {
				if !final.get(context.Background(), key, c.procs[id]) {
					return fmt.Errorf("not answered")
				}
				return nil
			})
		}
	}

	t.Logf("%d acknowledged writes, %d unknown, %d not applied (503), %d reads; %d kills, %d restarts, %d/%d leader transfers",
		stats.acked.Load(), stats.unknown.Load(), stats.notApplied.Load(), stats.reads.Load(),
		stats.kills.Load(), stats.restarts.Load(), stats.transfers.Load(), stats.transferTries.Load())
	if stats.acked.Load() < 20 || stats.kills.Load() < 1 || stats.restarts.Load() < 1 || stats.transferTries.Load() < 1 {
		t.Errorf("the run did too little to mean anything: %d acknowledged writes, %d kills, %d transfer attempts",
			stats.acked.Load(), stats.kills.Load(), stats.transferTries.Load())
	}

	ops := slices.Clone(h.ops)
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, 2*time.Minute)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		f, err := os.CreateTemp("", "kvexample-porcupine-*.html")
		if err != nil {
			t.Fatalf("history of %d operations is NOT linearizable (and writing the visualization failed: %v)", len(ops), err)
		}
		f.Close()
		if err := porcupine.VisualizePath(kvModel, info, f.Name()); err != nil {
			t.Fatalf("history of %d operations is NOT linearizable (and writing the visualization failed: %v)", len(ops), err)
		}
		t.Fatalf("history of %d operations is NOT linearizable; visualization: %s", len(ops), f.Name())
	default:
		t.Fatalf("linearizability check of %d operations did not finish in time", len(ops))
	}
}
