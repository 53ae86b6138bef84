// Package httpapi serves the key-value example over HTTP: one Server per
// raft.Node, backed by that node's kvstore.Store.
//
// Endpoints (all errors are JSON objects with an "error" field):
//
//	PUT    /kv/{key}              body = value; ?if=OLD or ?if-absent=true for compare-and-set
//	GET    /kv/{key}              linearizable (raft.Node.Read); ?stale=true reads the local copy
//	DELETE /kv/{key}
//	GET    /status                this node's role, term, leader, indexes, members
//	GET    /members               the cluster configuration
//	POST   /members               {"id":4,"addr":"host:port","voter":true}
//	DELETE /members/{id}
//	POST   /leader/transfer       ?to=ID (or {"to":ID}); without a target, the most caught-up voter
//
// Writes may carry ?client=ID&seq=N: the state machine answers a repeated
// (client, seq) with the stored result instead of applying it again, so a
// client may retry after a 504 without applying a write twice.
//
// A node that is not the leader answers writes, membership changes and
// transfers with 307 Temporary Redirect to the same path on the leader's
// HTTP address (clients follow it with the method and body unchanged);
// reads are served by every node.
//
// Status codes: 200 success; 400 bad input (and unknown paths); 404 only
// for a missing key; 405 wrong method; 409 compare-and-set mismatch; 413
// key or value too large; 503 the request surely was not carried out (no
// leader known, node stopping, proposal dropped) and is safe to retry; 504
// the write was proposed but its outcome is unknown (timeout, leadership
// lost): it may or may not have been applied.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/kvstore"
)

// Raft is the part of *raft.Node the Server uses; an interface so tests can
// stand in for the node.
type Raft interface {
	ID() raft.NodeID
	Propose(ctx context.Context, cmd []byte) (any, error)
	Read(ctx context.Context) error
	Status() raft.Status
	TransferLeadership(ctx context.Context, to raft.NodeID) error
	AddVoter(ctx context.Context, id raft.NodeID, addr string) error
	AddLearner(ctx context.Context, id raft.NodeID, addr string) error
	RemoveServer(ctx context.Context, id raft.NodeID) error
}

var _ Raft = (*raft.Node)(nil)

// Options tunes a Server. The zero value works for a single node.
type Options struct {
	// PeerURL returns the base URL ("http://127.0.0.1:8081") of node id's
	// HTTP API, or "" if it is not known. Followers redirect to the
	// leader's; without it they answer 503 naming the leader's ID.
	PeerURL func(id raft.NodeID) string
	// MaxKeyBytes bounds keys (default 1024 bytes).
	MaxKeyBytes int
	// MaxValueBytes bounds request bodies (default 1 MiB).
	MaxValueBytes int64
	// Timeout bounds how long one request waits for the cluster (default
	// 5s).
	Timeout time.Duration
}

// Server is an http.Handler for one node.
type Server struct {
	node  Raft
	store *kvstore.Store
	opts  Options
	mux   *http.ServeMux
}

// New returns a Server for node, which applies its log to store.
func New(node Raft, store *kvstore.Store, opts Options) *Server {
	if opts.MaxKeyBytes <= 0 {
		opts.MaxKeyBytes = 1024
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = 1 << 20
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	s := &Server{node: node, store: store, opts: opts, mux: http.NewServeMux()}
	s.mux.HandleFunc("/kv/{key...}", s.handleKV)
	s.mux.HandleFunc("/status", s.only(http.MethodGet, s.handleStatus))
	s.mux.HandleFunc("/members", s.handleMembers)
	s.mux.HandleFunc("/members/{id}", s.only(http.MethodDelete, s.handleRemoveMember))
	s.mux.HandleFunc("/leader/transfer", s.only(http.MethodPost, s.handleTransfer))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("unknown path %q", r.URL.Path)})
	})
	return s
}

// ServeHTTP dispatches a request to its endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
	// Outcome is "not applied" (503: safe to retry) or "unknown" (504: the
	// write may have been applied) for writes.
	Outcome string `json:"outcome,omitempty"`
	// Leader is the leader's ID when this node knows it.
	Leader uint64 `json:"leader,omitempty"`
	// Found and Current describe the key when a compare-and-set fails.
	Found   *bool   `json:"found,omitempty"`
	Current *string `json:"current,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf(format, args...)})
}

// only rejects methods other than method with 405.
func (s *Server) only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			methodNotAllowed(w, method)
			return
		}
		h(w, r)
	}
}

func methodNotAllowed(w http.ResponseWriter, allowed ...string) {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed; use " + strings.Join(allowed, " or ")})
}

// fail answers a request that the cluster did not carry out. For a
// request that needs the leader, a follower that knows the leader's HTTP
// address redirects there. write says whether err comes from a proposed
// change, whose fate may be unknown.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error, write bool) {
	var nl *raft.NotLeaderError
	var te *raft.TransferError
	switch {
	case errors.As(err, &nl):
		if nl.Leader == raft.None {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "no leader known; retry shortly", Outcome: notApplied(write)})
			return
		}
		if write && s.opts.PeerURL != nil {
			if base := s.opts.PeerURL(nl.Leader); base != "" {
				w.Header().Set("Location", strings.TrimSuffix(base, "/")+r.URL.RequestURI())
				writeJSON(w, http.StatusTemporaryRedirect, errorBody{Error: "not the leader; follow the redirect", Leader: uint64(nl.Leader)})
				return
			}
		}
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf("not the leader; node %d is", nl.Leader), Outcome: notApplied(write), Leader: uint64(nl.Leader)})
	case errors.Is(err, raft.ErrStopped):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "node is stopping", Outcome: notApplied(write)})
	case errors.Is(err, raft.ErrProposalDropped):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "proposal dropped; it was not applied, retry", Outcome: notApplied(write)})
	case errors.Is(err, raft.ErrConfChangePending):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "another membership change is in progress; retry", Outcome: notApplied(write)})
	case errors.As(err, &te):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: te.Error()})
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if !write {
			writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: "timed out: " + err.Error() + "; safe to retry"})
			return
		}
		writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: "outcome unknown: " + err.Error(), Outcome: "unknown"})
	default:
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
	}
}

func notApplied(write bool) string {
	if write {
		return "not applied"
	}
	return ""
}

func (s *Server) handleKV(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		badRequest(w, "empty key")
		return
	}
	if len(key) > s.opts.MaxKeyBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("key is %d bytes; the limit is %d", len(key), s.opts.MaxKeyBytes)})
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.handleGet(w, r, key)
	case http.MethodPut:
		s.handlePut(w, r, key)
	case http.MethodDelete:
		s.handleDelete(w, r, key)
	default:
		methodNotAllowed(w, http.MethodGet, http.MethodPut, http.MethodDelete)
	}
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, key string) {
	stale, err := boolParam(r, "stale")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if !stale {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
		err := s.node.Read(ctx)
		cancel()
		if err != nil {
			s.fail(w, r, err, false)
			return
		}
	}
	v, ok := s.store.Get(key)
	if !ok {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "key not found"})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(v)))
	w.WriteHeader(http.StatusOK)
	w.Write(v)
}

// writeResult is the JSON answer to a successful write.
type writeResult struct {
	Index     uint64 `json:"index"`
	Found     bool   `json:"found"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request, key string) {
	cmd := kvstore.Command{Op: kvstore.OpPut, Key: key}
	q := r.URL.Query()
	absent, err := boolParam(r, "if-absent")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if q.Has("if") && absent {
		badRequest(w, "use either if or if-absent, not both")
		return
	}
	if q.Has("if") {
		cmd.Op, cmd.Expect = kvstore.OpCAS, []byte(q.Get("if"))
	} else if absent {
		cmd.Op, cmd.ExpectAbsent = kvstore.OpCAS, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxValueBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("value larger than the limit of %d bytes", s.opts.MaxValueBytes)})
			return
		}
		badRequest(w, "reading body: %v", err)
		return
	}
	cmd.Value = body
	s.propose(w, r, cmd)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, key string) {
	s.propose(w, r, kvstore.Command{Op: kvstore.OpDelete, Key: key})
}

// propose sends a write through the log and answers with its result.
func (s *Server) propose(w http.ResponseWriter, r *http.Request, cmd kvstore.Command) {
	var err error
	if cmd.ClientID, cmd.Seq, err = sessionParams(r); err != nil {
		badRequest(w, "%v", err)
		return
	}
	data, err := cmd.MarshalBinary()
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
	defer cancel()
	v, err := s.node.Propose(ctx, data)
	if err != nil {
		s.fail(w, r, err, true)
		return
	}
	res, ok := v.(kvstore.Result)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: fmt.Sprintf("unexpected result %T from the state machine", v)})
		return
	}
	switch {
	case errors.Is(res.Err, kvstore.ErrStaleSequence):
		badRequest(w, "seq %d is older than this client's last request; its result is gone", cmd.Seq)
	case res.Err != nil:
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: res.Err.Error()})
	case !res.OK:
		found := res.Found
		var cur *string
		if found {
			c := string(res.Value)
			cur = &c
		}
		writeJSON(w, http.StatusConflict, errorBody{Error: "compare-and-set failed: the key does not hold the expected value", Found: &found, Current: cur})
	default:
		writeJSON(w, http.StatusOK, writeResult{Index: res.Index, Found: res.Found, Duplicate: res.Duplicate})
	}
}

// sessionParams reads ?client=ID&seq=N; both or neither must be given.
func sessionParams(r *http.Request) (client, seq uint64, err error) {
	q := r.URL.Query()
	if !q.Has("client") && !q.Has("seq") {
		return 0, 0, nil
	}
	client, err = strconv.ParseUint(q.Get("client"), 10, 64)
	if err != nil || client == 0 {
		return 0, 0, fmt.Errorf("client must be a positive integer, got %q", q.Get("client"))
	}
	seq, err = strconv.ParseUint(q.Get("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, 0, fmt.Errorf("seq must be a positive integer, got %q", q.Get("seq"))
	}
	return client, seq, nil
}

// boolParam reads an optional boolean query parameter.
func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s must be true or false, got %q", name, v)
	}
	return b, nil
}
