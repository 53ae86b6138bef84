package main

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/kvstore"
)

// replica is one member of the simulated cluster: a raft.Node whose
// Transport is the simulator's socket, and the client request handling.
type replica struct {
	id     string
	nid    raft.NodeID
	conn   net.Conn
	node   *raft.Node
	store  *kvstore.Store
	logger *slog.Logger
	cfg    raft.Config

	out     chan []byte // encoded messages waiting for the writer
	deliver func(raft.Message)
	closed  chan struct{}
	once    sync.Once

	sent, dropped atomic.Uint64
	leader        atomic.Uint64 // raft.NodeID this replica believes leads, from the Observer

	mu       sync.Mutex
	inflight map[string]bool // MIDs being handled
	answered map[string]bool // MIDs answered ok, never answered again
	answerQ  []string        // answered MIDs in order, to bound the set
}

// Tuned for the simulator: no message in the first 200ms (the first
// election timeout is at least 300ms), few heartbeats (every 100ms, a
// third of the minimum election timeout, so one survives 30% loss), small
// AppendEntries batches.
func replicaConfig(id raft.NodeID, peers []raft.Server) raft.Config {
	cfg := raft.DefaultConfig()
	cfg.ID = id
	cfg.Peers = peers
	cfg.TickInterval = 10 * time.Millisecond
	cfg.ElectionTicks = 30
	cfg.HeartbeatTicks = 10
	cfg.MaxSizePerMsg = 256 << 10
	// Gets are served under the leader lease (check-quorum), without a
	// heartbeat round per read.
	cfg.LeaseRead = true
	return cfg
}

const (
	outQueue      = 8192
	maxAnswered   = 100000
	clientTimeout = 2 * time.Second
)

func newReplica(id string, nid raft.NodeID, conn net.Conn, cfg raft.Config, logger *slog.Logger) *replica {
	return &replica{
		id: id, nid: nid, conn: conn, cfg: cfg, logger: logger,
		store:    kvstore.New(0),
		out:      make(chan []byte, outQueue),
		closed:   make(chan struct{}),
		inflight: make(map[string]bool),
		answered: make(map[string]bool),
	}
}

// start starts the raft node and the socket's reader and writer.
func (r *replica) start() error {
	r.cfg.Observer = func(o raft.Observation) { r.leader.Store(uint64(o.Leader)) }
	nd, err := raft.NewNode(r.cfg, r.store, raft.NewMemoryStorage(), (*simTransport)(r))
	if err != nil {
		return err
	}
	r.node = nd
	go r.writeLoop()
	return nil
}

// run reads the socket until it closes.
func (r *replica) run() error {
	fr := newFrameReader(r.conn)
	for {
		frame, err := fr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var m wireMsg
		if err := json.Unmarshal(frame, &m); err != nil {
			r.logger.Warn("dropping unparsable message", "err", err)
			continue
		}
		if m.Dst != r.id && m.Dst != Broadcast {
			continue
		}
		switch m.Type {
		case "raft":
			r.handleRaft(&m)
		case "get", "put":
			if m.MID == "" {
				continue
			}
			r.mu.Lock()
			busy := r.inflight[m.MID] || r.answered[m.MID]
			if !busy {
				r.inflight[m.MID] = true
			}
			r.mu.Unlock()
			if !busy {
				go r.handleClient(m)
			}
		}
	}
}

func (r *replica) handleRaft(m *wireMsg) {
	r.mu.Lock()
	deliver := r.deliver
	r.mu.Unlock()
	if deliver == nil {
		return
	}
	for _, b := range m.Raft {
		var rm raft.Message
		if err := rm.UnmarshalBinary(b); err != nil {
			r.logger.Warn("dropping corrupt raft message", "from", m.Src, "err", err)
			continue
		}
		if rm.To != r.nid {
			continue
		}
		deliver(rm)
	}
}

// leaderField is this replica's current belief about the leader.
func (r *replica) leaderField() string {
	return formatID(raft.NodeID(r.leader.Load()))
}

// enqueue hands an encoded message to the writer. Raft traffic is dropped
// when the queue is full (Raft retries); client replies wait.
func (r *replica) enqueue(b []byte, mayDrop bool) {
	if mayDrop {
		select {
		case r.out <- b:
		default:
			r.dropped.Add(1)
		}
		return
	}
	select {
	case r.out <- b:
	case <-r.closed:
	}
}

func (r *replica) writeLoop() {
	for {
		select {
		case b := <-r.out:
			if _, err := r.conn.Write(b); err != nil {
				r.close()
				return
			}
		case <-r.closed:
			return
		}
	}
}

func (r *replica) close() {
	r.once.Do(func() {
		close(r.closed)
		r.conn.Close()
	})
}

// reply answers a client request. An "ok" is sent at most once per MID;
// a redirect or fail is only a hint, so a client retrying the MID later is
// served again.
func (r *replica) reply(req wireMsg, typ, leader string, value *string) {
	r.mu.Lock()
	delete(r.inflight, req.MID)
	if typ == "ok" {
		if r.answered[req.MID] {
			r.mu.Unlock()
			return
		}
		r.answered[req.MID] = true
		r.answerQ = append(r.answerQ, req.MID)
		if len(r.answerQ) > maxAnswered {
			delete(r.answered, r.answerQ[0])
			r.answerQ = r.answerQ[1:]
		}
	}
	r.mu.Unlock()
	m := wireMsg{Src: r.id, Dst: req.Src, Leader: leader, Type: typ, MID: req.MID, Value: value}
	b, err := m.encode()
	if err != nil {
		return
	}
	r.enqueue(b, false)
}

// handleClient serves one get or put. Only the leader serves requests;
// other replicas redirect to the leader they know, or wait briefly for an
// election before failing the request.
func (r *replica) handleClient(req wireMsg) {
	lead := r.waitLeader()
	switch {
	case lead == raft.None:
		r.reply(req, "fail", Broadcast, nil)
		return
	case lead != r.nid:
		r.reply(req, "redirect", formatID(lead), nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	var err error
	var value *string
	if req.Type == "put" {
		err = r.put(ctx, req)
	} else {
		value, err = r.get(ctx, req.Key)
	}
	if err == nil {
		r.reply(req, "ok", formatID(r.nid), value)
		return
	}
	// Not done. A known other leader gets the retry (the write is
	// deduplicated by MID if it did commit here); otherwise fail.
	if l := r.node.Leader(); l != raft.None && l != r.nid {
		r.reply(req, "redirect", formatID(l), nil)
		return
	}
	r.reply(req, "fail", r.leaderField(), nil)
}

// waitLeader returns the known leader, waiting up to an election timeout
// for one if none is known.
func (r *replica) waitLeader() raft.NodeID {
	limit := time.NewTimer(2 * time.Duration(r.cfg.ElectionTicks) * r.cfg.TickInterval)
	defer limit.Stop()
	for {
		o, ch := r.node.Changes()
		if o.Leader != raft.None {
			return o.Leader
		}
		select {
		case <-ch:
		case <-limit.C:
			return raft.None
		case <-r.closed:
			return raft.None
		}
	}
}

// put commits a put. Its MID becomes a one-request client session of the
// state machine, so a retried MID is applied at most once.
func (r *replica) put(ctx context.Context, req wireMsg) error {
	h := fnv.New64a()
	h.Write([]byte(req.Src))
	h.Write([]byte{0})
	h.Write([]byte(req.MID))
	client := h.Sum64() | 1
	cmd := kvstore.Command{Op: kvstore.OpPut, ClientID: client, Seq: 1, Key: req.Key}
	if req.Value != nil {
		cmd.Value = []byte(*req.Value)
	}
	data, err := cmd.MarshalBinary()
	if err != nil {
		return err
	}
	v, err := r.node.Propose(ctx, data)
	if err != nil {
		return err
	}
	if res, ok := v.(kvstore.Result); !ok || res.Err != nil {
		return errors.New("put not applied")
	}
	return nil
}

// get reads key linearizably: a ReadIndex barrier, then the local copy.
func (r *replica) get(ctx context.Context, key string) (*string, error) {
	if err := r.node.Read(ctx); err != nil {
		return nil, err
	}
	v, _ := r.store.Get(key)
	s := string(v)
	return &s, nil
}

// simTransport is the raft.Transport over the simulator's socket: every
// batch of raft messages for one replica travels as one JSON message.
type simTransport replica

func (t *simTransport) Start(deliver func(raft.Message)) error {
	r := (*replica)(t)
	r.mu.Lock()
	r.deliver = deliver
	r.mu.Unlock()
	return nil
}

func (t *simTransport) Send(msgs []raft.Message) {
	r := (*replica)(t)
	leader := r.leaderField()
	for i := range msgs {
		switch msgs[i].Type {
		case raft.MsgApp, raft.MsgHeartbeat, raft.MsgSnap:
			// Only a leader sends these; the Observer may not have
			// reported the election yet.
			leader = r.id
		}
	}
	for len(msgs) > 0 {
		to := msgs[0].To
		m := wireMsg{Src: r.id, Dst: formatID(to), Leader: leader, Type: "raft"}
		rest := msgs[:0:0]
		election := false
		for i := range msgs {
			if msgs[i].To != to {
				rest = append(rest, msgs[i])
				continue
			}
			election = election || isElection(msgs[i].Type)
			b, err := msgs[i].MarshalBinary()
			if err != nil {
				continue
			}
			m.Raft = append(m.Raft, b)
		}
		msgs = rest
		b, err := m.encode()
		if err != nil {
			continue
		}
		r.sent.Add(1)
		r.enqueue(b, true)
		if election {
			r.sent.Add(1)
			r.enqueue(b, true)
		}
	}
}

// isElection reports whether m belongs to an election. Raft sends these
// once per term and an election needs every round trip to a quorum to get
// through, so under 30% loss with a bare quorum alive most elections fail;
// sending them twice (as separate simulator messages) makes a lost copy
// cheap. Raft ignores the duplicates. Elections are rare, so this costs
// few messages.
func isElection(t raft.MessageType) bool {
	switch t {
	case raft.MsgPreVote, raft.MsgPreVoteResp, raft.MsgVote, raft.MsgVoteResp, raft.MsgTimeoutNow:
		return true
	}
	return false
}

func (t *simTransport) SetPeers([]raft.Server) {}

func (t *simTransport) Close() error {
	r := (*replica)(t)
	r.mu.Lock()
	r.deliver = nil
	r.mu.Unlock()
	return nil
}
