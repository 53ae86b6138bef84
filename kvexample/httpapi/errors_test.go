package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/kvstore"
)

// fakeNode fails every call with err, so each error's status code can be
// checked without arranging the failure in a real cluster.
type fakeNode struct {
	err    error
	result any
	status raft.Status
}

func (f *fakeNode) ID() raft.NodeID { return 1 }
func (f *fakeNode) Propose(ctx context.Context, _ []byte) (any, error) {
	if errors.Is(f.err, context.DeadlineExceeded) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.result, f.err
}
func (f *fakeNode) Read(ctx context.Context) error {
	if errors.Is(f.err, context.DeadlineExceeded) {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.err
}
func (f *fakeNode) Status() raft.Status { return f.status }
func (f *fakeNode) TransferLeadership(context.Context, raft.NodeID) error {
	return f.err
}
func (f *fakeNode) AddVoter(context.Context, raft.NodeID, string) error   { return f.err }
func (f *fakeNode) AddLearner(context.Context, raft.NodeID, string) error { return f.err }
func (f *fakeNode) RemoveServer(context.Context, raft.NodeID) error       { return f.err }

func TestErrorStatusCodes(t *testing.T) {
	leaderStatus := raft.Status{ID: 1, Role: raft.Leader, Leader: 1, Config: raft.Configuration{Servers: []raft.Server{{ID: 1}, {ID: 2}}}}
	cases := []struct {
		name        string
		err         error
		result      any
		method, url string
		body        string
		code        int
		outcome     string
		want        string
	}{
		{"leadership lost during a write", raft.ErrLeadershipLost, nil, "PUT", "/kv/k", "v", 504, "unknown", "outcome unknown"},
		{"write timed out", context.DeadlineExceeded, nil, "PUT", "/kv/k", "v", 504, "unknown", "outcome unknown"},
		{"delete timed out", context.DeadlineExceeded, nil, "DELETE", "/kv/k", "", 504, "unknown", "outcome unknown"},
		{"membership change timed out", context.DeadlineExceeded, nil, "POST", "/members", `{"id":3}`, 504, "unknown", "outcome unknown"},
		{"read timed out", context.DeadlineExceeded, nil, "GET", "/kv/k", "", 504, "", "safe to retry"},
		{"no leader for a write", &raft.NotLeaderError{}, nil, "PUT", "/kv/k", "v", 503, "not applied", "no leader known"},
		{"no leader for a read", &raft.NotLeaderError{}, nil, "GET", "/kv/k", "", 503, "", "no leader known"},
		{"leader known but its URL is not", &raft.NotLeaderError{Leader: 2}, nil, "PUT", "/kv/k", "v", 503, "not applied", "node 2 is"},
		{"node stopping", raft.ErrStopped, nil, "PUT", "/kv/k", "v", 503, "not applied", "node is stopping"},
		{"proposal dropped", raft.ErrProposalDropped, nil, "PUT", "/kv/k", "v", 503, "not applied", "proposal dropped"},
		{"membership change pending", raft.ErrConfChangePending, nil, "DELETE", "/members/2", "", 503, "not applied", "membership change is in progress"},
		{"transfer failed", &raft.TransferError{To: 2, Reason: "target did not win"}, nil, "POST", "/leader/transfer?to=2", "", 503, "", "target did not win"},
		{"state machine returned junk", nil, "junk", "PUT", "/kv/k", "v", 500, "", "unexpected result string"},
		{"state machine refused the command", nil, kvstore.Result{Err: kvstore.ErrBadCommand}, "PUT", "/kv/k", "v", 500, "", "malformed command"},
		{"unexpected error", errors.New("disk on fire"), nil, "PUT", "/kv/k", "v", 500, "", "disk on fire"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node := &fakeNode{err: tc.err, result: tc.result, status: leaderStatus}
			srv := httptest.NewServer(New(node, kvstore.New(0), Options{Timeout: 50 * time.Millisecond}))
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.url, strings.NewReader(tc.body))
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body errorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.code || body.Outcome != tc.outcome || !strings.Contains(body.Error, tc.want) {
				t.Fatalf("got %d %+v, want %d outcome %q containing %q", resp.StatusCode, body, tc.code, tc.outcome, tc.want)
			}
		})
	}
}

func TestTransferWithNoOtherVoter(t *testing.T) {
	node := &fakeNode{status: raft.Status{ID: 1, Role: raft.Leader, Leader: 1, Config: raft.Configuration{Servers: []raft.Server{{ID: 1}}}}}
	srv := httptest.NewServer(New(node, kvstore.New(0), Options{}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/leader/transfer", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %d, want 503", resp.StatusCode)
	}
}

func TestNotFoundOnlyForMissingKeys(t *testing.T) {
	// Every error path above returns something other than 404; here the
	// one 404 path is checked to carry a JSON body naming the cause.
	srv := httptest.NewServer(New(&fakeNode{}, kvstore.New(0), Options{}))
	defer srv.Close()
	for _, path := range []string{"/kv/missing", "/kv/missing?stale=true"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 404 || body.Error != "key not found" {
			t.Fatalf("%s: %d %+v", path, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/missing", "/kv", "/statuss", fmt.Sprintf("/members/%d/x", 3)} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 404 {
			t.Fatalf("%s answered 404, which is reserved for missing keys", path)
		}
	}
}
