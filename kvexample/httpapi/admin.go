package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/raftgo/raft"
)

// maxAdminBody bounds the JSON bodies of membership and transfer requests.
const maxAdminBody = 64 << 10

// member is one server of the configuration, as JSON.
type member struct {
	ID       uint64 `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"`
}

// progress is the leader's view of a follower, as JSON.
type progress struct {
	Match        uint64 `json:"match"`
	Next         uint64 `json:"next"`
	State        string `json:"state"`
	RecentActive bool   `json:"recent_active"`
}

// statusBody is the JSON of GET /status.
type statusBody struct {
	ID         uint64              `json:"id"`
	Role       string              `json:"role"`
	Term       uint64              `json:"term"`
	Leader     uint64              `json:"leader"`
	LeaderURL  string              `json:"leader_url,omitempty"`
	Commit     uint64              `json:"commit"`
	Applied    uint64              `json:"applied"`
	FirstIndex uint64              `json:"first_index"`
	LastIndex  uint64              `json:"last_index"`
	Snapshot   uint64              `json:"snapshot"`
	Keys       int                 `json:"keys"`
	Members    []member            `json:"members"`
	Progress   map[string]progress `json:"progress,omitempty"`
	Stopped    bool                `json:"stopped"`
}

func members(c raft.Configuration) []member {
	out := make([]member, 0, len(c.Servers))
	for _, s := range c.Servers {
		out = append(out, member{ID: uint64(s.ID), Addr: s.Addr, Suffrage: s.Suffrage.String()})
	}
	return out
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := s.node.Status()
	body := statusBody{
		ID: uint64(st.ID), Role: st.Role.String(), Term: st.Term, Leader: uint64(st.Leader),
		Commit: st.Commit, Applied: st.Applied, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
		Snapshot: st.Snapshot, Keys: s.store.Len(), Members: members(st.Config), Stopped: st.Stopped,
	}
	if st.Leader != raft.None && s.opts.PeerURL != nil {
		body.LeaderURL = s.opts.PeerURL(st.Leader)
	}
	if len(st.Progress) > 0 {
		body.Progress = make(map[string]progress, len(st.Progress))
		for id, p := range st.Progress {
			body.Progress[strconv.FormatUint(uint64(id), 10)] = progress{Match: p.Match, Next: p.Next, State: p.State.String(), RecentActive: p.RecentActive}
		}
	}
	writeJSON(w, http.StatusOK, body)
}

// addMemberRequest is the body of POST /members.
type addMemberRequest struct {
	ID    uint64 `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"members": members(s.node.Status().Config)})
	case http.MethodPost:
		var req addMemberRequest
		if !decodeBody(w, r, &req, false) {
			return
		}
		if req.ID == 0 {
			badRequest(w, `"id" must be a positive integer`)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
		defer cancel()
		var err error
		if req.Voter {
			err = s.node.AddVoter(ctx, raft.NodeID(req.ID), req.Addr)
		} else {
			err = s.node.AddLearner(ctx, raft.NodeID(req.ID), req.Addr)
		}
		if err != nil {
			s.fail(w, r, err, true)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"members": members(s.node.Status().Config)})
	default:
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
	}
}

func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		badRequest(w, "member ID must be a positive integer, got %q", r.PathValue("id"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
	defer cancel()
	if err := s.node.RemoveServer(ctx, raft.NodeID(id)); err != nil {
		s.fail(w, r, err, true)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": members(s.node.Status().Config)})
}

// transferRequest is the optional body of POST /leader/transfer.
type transferRequest struct {
	To uint64 `json:"to"`
}

func (s *Server) handleTransfer(w http.ResponseWriter, r *http.Request) {
	var req transferRequest
	if q := r.URL.Query(); q.Has("to") {
		to, err := strconv.ParseUint(q.Get("to"), 10, 64)
		if err != nil || to == 0 {
			badRequest(w, "to must be a positive node ID, got %q", q.Get("to"))
			return
		}
		req.To = to
	} else if !decodeBody(w, r, &req, true) {
		return
	}
	st := s.node.Status()
	if st.Role != raft.Leader {
		s.fail(w, r, &raft.NotLeaderError{Leader: st.Leader}, true)
		return
	}
	to := raft.NodeID(req.To)
	if to == raft.None {
		to = bestTarget(st)
		if to == raft.None {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "no other voter to transfer leadership to"})
			return
		}
	} else if !st.Config.IsVoter(to) {
		badRequest(w, "node %d is not a voter", to)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
	defer cancel()
	if err := s.node.TransferLeadership(ctx, to); err != nil {
		s.fail(w, r, err, true)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"leader": uint64(to)})
}

// bestTarget picks the voter other than the leader with the highest match
// index.
func bestTarget(st raft.Status) raft.NodeID {
	var best raft.NodeID
	var bestMatch uint64
	for _, id := range st.Config.Voters() {
		p, ok := st.Progress[id]
		if id == st.ID || !ok {
			continue
		}
		if best == raft.None || p.Match > bestMatch {
			best, bestMatch = id, p.Match
		}
	}
	return best
}

// decodeBody decodes a JSON body into v, answering 400 or 413 itself when
// it cannot. An empty body is accepted only if optional.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("body larger than %d bytes", maxAdminBody)})
			return false
		}
		badRequest(w, "reading body: %v", err)
		return false
	}
	if len(data) == 0 && optional {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		badRequest(w, "bad JSON body: %v", err)
		return false
	}
	if dec.More() {
		badRequest(w, "bad JSON body: more than one value")
		return false
	}
	return true
}
