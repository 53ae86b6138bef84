package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/memcluster"
)

// env is a 3-node in-process cluster with one HTTP server per node.
type env struct {
	t       *testing.T
	c       *memcluster.Cluster
	mu      sync.Mutex
	servers map[raft.NodeID]*httptest.Server
	opts    Options
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// follow is a client that follows redirects.
var follow = &http.Client{Timeout: 30 * time.Second}

func testConfig() raft.Config {
	cfg := raft.DefaultConfig()
	cfg.TickInterval = 10 * time.Millisecond // the default: stable leaders on a loaded machine
	return cfg
}

func newEnv(t *testing.T, opts Options) *env {
	c, err := memcluster.Start(3, testConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c, servers: make(map[raft.NodeID]*httptest.Server)}
	opts.PeerURL = e.url
	e.opts = opts
	for _, m := range c.Members() {
		e.serve(m)
	}
	t.Cleanup(func() {
		e.mu.Lock()
		for _, s := range e.servers {
			s.Close()
		}
		e.mu.Unlock()
		c.Close()
	})
	return e
}

func (e *env) serve(m *memcluster.Member) {
	s := httptest.NewServer(New(m.Node, m.Store, e.opts))
	e.mu.Lock()
	e.servers[m.ID] = s
	e.mu.Unlock()
}

func (e *env) url(id raft.NodeID) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.servers[id]; s != nil {
		return s.URL
	}
	return ""
}

func (e *env) leader() raft.NodeID {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := e.c.WaitLeader(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

func (e *env) follower() raft.NodeID {
	lead := e.leader()
	for _, m := range e.c.Members() {
		if m.ID != lead {
			return m.ID
		}
	}
	e.t.Fatal("no follower")
	return raft.None
}

// reply is a decoded response.
type reply struct {
	code   int
	body   string
	header http.Header
	json   map[string]any
}

func (e *env) do(client *http.Client, method, url, body string) reply {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, body: string(b), header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.json); err != nil {
			e.t.Fatalf("%s %s: bad JSON %q: %v", method, url, b, err)
		}
	}
	return r
}

func (e *env) expect(r reply, code int, contains string) {
	e.t.Helper()
	if r.code != code || !strings.Contains(r.body, contains) {
		e.t.Fatalf("got %d %q, want %d containing %q", r.code, r.body, code, contains)
	}
	if code != http.StatusOK && r.json == nil {
		e.t.Fatalf("error response %d is not JSON: %q", r.code, r.body)
	}
}

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t, Options{})
	lead := e.url(e.leader())
	e.expect(e.do(noRedirect, "GET", lead+"/kv/a", ""), 404, "key not found")
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/a", "one"), 200, `"found":false`)
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/a", "two"), 200, `"found":true`)
	e.expect(e.do(noRedirect, "GET", lead+"/kv/a", ""), 200, "two")
	// Keys may hold slashes and escaped characters.
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/dir/sub%20key", "x"), 200, "index")
	e.expect(e.do(noRedirect, "GET", lead+"/kv/dir/sub%20key", ""), 200, "x")
	e.expect(e.do(noRedirect, "DELETE", lead+"/kv/a", ""), 200, `"found":true`)
	e.expect(e.do(noRedirect, "GET", lead+"/kv/a", ""), 404, "key not found")
	e.expect(e.do(noRedirect, "DELETE", lead+"/kv/a", ""), 200, `"found":false`)
	// An empty value is a value, not a missing key.
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/empty", ""), 200, "index")
	if r := e.do(noRedirect, "GET", lead+"/kv/empty", ""); r.code != 200 || r.body != "" {
		t.Fatalf("empty value: %d %q", r.code, r.body)
	}
}

func TestFollowerRedirectsWritesAndServesReads(t *testing.T) {
	e := newEnv(t, Options{})
	lead, fol := e.leader(), e.follower()
	r := e.do(noRedirect, "PUT", e.url(fol)+"/kv/k?client=3&seq=1", "v")
	e.expect(r, http.StatusTemporaryRedirect, "not the leader")
	if loc := r.header.Get("Location"); loc != e.url(lead)+"/kv/k?client=3&seq=1" {
		t.Fatalf("Location %q, want the same URI on the leader %s", loc, e.url(lead))
	}
	// A client that follows the redirect writes through the leader.
	e.expect(e.do(follow, "PUT", e.url(fol)+"/kv/k", "v"), 200, "index")
	// The follower answers a linearizable read itself, and sees the write.
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/kv/k", ""), 200, "v")
	// Deletes and membership changes redirect too.
	e.expect(e.do(noRedirect, "DELETE", e.url(fol)+"/kv/k", ""), http.StatusTemporaryRedirect, "")
	e.expect(e.do(noRedirect, "POST", e.url(fol)+"/members", `{"id":9}`), http.StatusTemporaryRedirect, "")
	e.expect(e.do(noRedirect, "DELETE", e.url(fol)+"/members/9", ""), http.StatusTemporaryRedirect, "")
	e.expect(e.do(noRedirect, "POST", e.url(fol)+"/leader/transfer", ""), http.StatusTemporaryRedirect, "")
}

func TestStaleReadServesLocalCopy(t *testing.T) {
	e := newEnv(t, Options{})
	fol := e.follower()
	e.expect(e.do(follow, "PUT", e.url(e.leader())+"/kv/s", "v"), 200, "index")
	// Cut the follower off: a linearizable read cannot complete, a stale
	// one answers from the local copy once it has the write.
	m := e.c.Member(fol)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if v, ok := m.Store.Get("s"); ok && string(v) == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("follower never applied the write")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.c.Net.Isolate(fol)
	defer e.c.Net.Heal()
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/kv/s?stale=true", ""), 200, "v")
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/kv/missing?stale", ""), 404, "key not found")
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/kv/s?stale=maybe", ""), 400, "stale must be true or false")
}

func TestCompareAndSet(t *testing.T) {
	e := newEnv(t, Options{})
	lead := e.url(e.leader())
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/c?if-absent=true", "1"), 200, "index")
	r := e.do(noRedirect, "PUT", lead+"/kv/c?if-absent=true", "2")
	e.expect(r, http.StatusConflict, "compare-and-set failed")
	if r.json["current"] != "1" || r.json["found"] != true {
		t.Fatalf("409 should report the current value: %v", r.json)
	}
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/c?if=wrong", "2"), http.StatusConflict, `"current":"1"`)
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/c?if=1", "2"), 200, "index")
	e.expect(e.do(noRedirect, "GET", lead+"/kv/c", ""), 200, "2")
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/nokey?if=x", "2"), http.StatusConflict, `"found":false`)
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/c?if=2&if-absent=true", "3"), 400, "not both")
	e.expect(e.do(noRedirect, "GET", lead+"/kv/c", ""), 200, "2")
}

func TestRetriedWriteAppliesOnce(t *testing.T) {
	e := newEnv(t, Options{})
	lead := e.url(e.leader())
	first := e.do(noRedirect, "PUT", lead+"/kv/x?client=42&seq=1", "mine")
	e.expect(first, 200, "index")
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/x", "other"), 200, "index")
	retry := e.do(noRedirect, "PUT", lead+"/kv/x?client=42&seq=1", "mine")
	e.expect(retry, 200, `"duplicate":true`)
	if retry.json["index"] != first.json["index"] {
		t.Fatalf("retry answered index %v, original was %v", retry.json["index"], first.json["index"])
	}
	e.expect(e.do(noRedirect, "GET", lead+"/kv/x", ""), 200, "other")
	// A CAS retried after it succeeded still reports success.
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/x?if=other&client=42&seq=2", "cas"), 200, "index")
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/x?if=other&client=42&seq=2", "cas"), 200, `"duplicate":true`)
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/x?client=42&seq=1", "old"), 400, "older than this client's last request")
	e.expect(e.do(noRedirect, "GET", lead+"/kv/x", ""), 200, "cas")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, Options{MaxValueBytes: 1000, MaxKeyBytes: 20})
	lead := e.url(e.leader())
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/kv/", "v", 400, "empty key"},
		{"GET", "/kv/", "", 400, "empty key"},
		{"PUT", "/kv/" + strings.Repeat("k", 21), "v", 413, "key is 21 bytes"},
		{"PUT", "/kv/big", strings.Repeat("v", 1001), 413, "larger than the limit"},
		{"PUT", "/kv/k?client=1", "v", 400, "seq must be a positive integer"},
		{"PUT", "/kv/k?seq=1", "v", 400, "client must be a positive integer"},
		{"PUT", "/kv/k?client=x&seq=1", "v", 400, "client must be"},
		{"PUT", "/kv/k?client=1&seq=0", "v", 400, "seq must be"},
		{"PUT", "/kv/k?if-absent=perhaps", "v", 400, "if-absent must be"},
		{"POST", "/kv/k", "v", 405, "method not allowed"},
		{"PATCH", "/kv/k", "v", 405, "method not allowed"},
		{"POST", "/status", "", 405, "method not allowed"},
		{"GET", "/leader/transfer", "", 405, "method not allowed"},
		{"PUT", "/members", "", 405, "method not allowed"},
		{"GET", "/", "", 400, "unknown path"},
		{"GET", "/nothing/here", "", 400, "unknown path"},
		{"PUT", "/kvv/x", "v", 400, "unknown path"},
		{"POST", "/members", "{", 400, "bad JSON"},
		{"POST", "/members", `{"id":"four"}`, 400, "bad JSON"},
		{"POST", "/members", `{"id":4,"colour":"red"}`, 400, "unknown field"},
		{"POST", "/members", `{"id":4} {"id":5}`, 400, "more than one value"},
		{"POST", "/members", `{"addr":"x"}`, 400, `\"id\" must be a positive integer`},
		{"POST", "/members", "", 400, "bad JSON"},
		{"POST", "/members", `{"addr":"` + strings.Repeat("a", 70000) + `"}`, 413, "body larger than"},
		{"DELETE", "/members/abc", "", 400, "member ID must be a positive integer"},
		{"DELETE", "/members/0", "", 400, "member ID must be a positive integer"},
		{"POST", "/leader/transfer?to=abc", "", 400, "to must be a positive node ID"},
		{"POST", "/leader/transfer", `{"to":`, 400, "bad JSON"},
		{"POST", "/leader/transfer?to=77", "", 400, "not a voter"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path[:min(len(tc.path), 30)], func(t *testing.T) {
			e.t = t
			e.expect(e.do(noRedirect, tc.method, lead+tc.path, tc.body), tc.code, tc.want)
		})
	}
	e.t = t
	// No rejected request changed anything.
	e.expect(e.do(noRedirect, "GET", lead+"/kv/k", ""), 404, "key not found")
	e.expect(e.do(noRedirect, "GET", lead+"/kv/big", ""), 404, "key not found")
}

func TestStatusAndMembers(t *testing.T) {
	e := newEnv(t, Options{})
	leadID := e.leader()
	// Wait until the leader has heard from every follower.
	var st map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := e.do(noRedirect, "GET", e.url(leadID)+"/status", "")
		e.expect(r, 200, `"role":"leader"`)
		st = r.json
		if p, _ := st["progress"].(map[string]any); len(p) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader status never listed 3 progress entries: %v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st["leader"] != float64(leadID) || st["leader_url"] != e.url(leadID) || st["term"].(float64) < 1 || st["commit"].(float64) < 1 {
		t.Fatalf("leader status: %v", st)
	}
	if ms := st["members"].([]any); len(ms) != 3 {
		t.Fatalf("members: %v", ms)
	}
	fol := e.do(noRedirect, "GET", e.url(e.follower())+"/status", "")
	e.expect(fol, 200, `"role":"follower"`)
	if fol.json["leader"] != float64(leadID) || fol.json["progress"] != nil {
		t.Fatalf("follower status: %v", fol.json)
	}
	e.expect(e.do(noRedirect, "GET", e.url(leadID)+"/members", ""), 200, `"suffrage":"voter"`)
}

func TestMembershipChangesThroughHTTP(t *testing.T) {
	e := newEnv(t, Options{Timeout: 20 * time.Second})
	lead := e.url(e.leader())
	e.expect(e.do(noRedirect, "PUT", lead+"/kv/before", "1"), 200, "index")
	m4, err := e.c.Restart(4) // a new, empty node waiting to be added
	if err != nil {
		t.Fatal(err)
	}
	e.serve(m4)
	e.expect(e.do(noRedirect, "POST", lead+"/members", `{"id":4,"addr":"n4"}`), 200, `{"id":4,"addr":"n4","suffrage":"learner"}`)
	e.expect(e.do(noRedirect, "POST", lead+"/members", `{"id":4,"addr":"n4","voter":true}`), 200, `{"id":4,"addr":"n4","suffrage":"voter"}`)
	// The new member has the data written before it joined.
	e.expect(e.do(noRedirect, "GET", e.url(4)+"/kv/before", ""), 200, "1")
	e.expect(e.do(noRedirect, "DELETE", lead+"/members/4", ""), 200, "members")
	r := e.do(noRedirect, "GET", lead+"/members", "")
	if strings.Contains(r.body, `"id":4`) {
		t.Fatalf("node 4 still a member: %s", r.body)
	}
	// Removing a server that is not a member is a no-op.
	e.expect(e.do(noRedirect, "DELETE", lead+"/members/99", ""), 200, "members")
}

func TestLeaderTransfer(t *testing.T) {
	e := newEnv(t, Options{Timeout: 20 * time.Second})
	lead := e.leader()
	fol := e.follower()
	r := e.do(noRedirect, "POST", e.url(lead)+fmt.Sprintf("/leader/transfer?to=%d", fol), "")
	e.expect(r, 200, fmt.Sprintf(`"leader":%d`, fol))
	if got := e.leader(); got != fol {
		t.Fatalf("leader is %d after transfer to %d", got, fol)
	}
	// Without a target, the leader picks a caught-up voter itself; the
	// body form works too.
	r = e.do(noRedirect, "POST", e.url(fol)+"/leader/transfer", "")
	e.expect(r, 200, "leader")
	if got := e.leader(); got == fol || float64(got) != r.json["leader"] {
		t.Fatalf("leader is %d after an untargeted transfer that reported %v", got, r.json["leader"])
	}
	now := e.leader()
	e.expect(e.do(noRedirect, "POST", e.url(now)+"/leader/transfer", fmt.Sprintf(`{"to":%d}`, lead)), 200, fmt.Sprintf(`"leader":%d`, lead))
}

func TestWriteToIsolatedLeaderIsOutcomeUnknown(t *testing.T) {
	e := newEnv(t, Options{Timeout: 2 * time.Second})
	lead := e.leader()
	e.c.Net.Isolate(lead)
	defer e.c.Net.Heal()
	// The old leader appends the write but cannot commit it: it either
	// times out or steps down (check-quorum); both are 504.
	r := e.do(noRedirect, "PUT", e.url(lead)+"/kv/lost", "v")
	if r.code != http.StatusGatewayTimeout && r.code != http.StatusServiceUnavailable {
		t.Fatalf("got %d %s, want 504 (or 503 if it stepped down before proposing)", r.code, r.body)
	}
	if r.code == http.StatusGatewayTimeout && r.json["outcome"] != "unknown" {
		t.Fatalf("504 must say the outcome is unknown: %s", r.body)
	}
}

func TestStoppedNodeAnswers503(t *testing.T) {
	e := newEnv(t, Options{})
	fol := e.follower()
	if err := e.c.Stop(fol); err != nil {
		t.Fatal(err)
	}
	r := e.do(noRedirect, "PUT", e.url(fol)+"/kv/k", "v")
	e.expect(r, http.StatusServiceUnavailable, "node is stopping")
	if r.json["outcome"] != "not applied" {
		t.Fatalf("503 must say the write was not applied: %s", r.body)
	}
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/kv/k", ""), http.StatusServiceUnavailable, "node is stopping")
	e.expect(e.do(noRedirect, "GET", e.url(fol)+"/status", ""), 200, `"stopped":true`)
}
