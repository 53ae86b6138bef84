package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	eraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcd raft has no bundled runtime: the application drives raft.Node. This
// file is that driver, written the way the package documentation describes
// (doc.go, "The total state machine handling loop"): on every Ready,
// persist HardState/Entries/Snapshot to MemoryStorage, send Messages,
// apply the snapshot and CommittedEntries, then Advance. Messages travel
// over an in-process network of the same style as this library's Network:
// a non-blocking hand-off into the receiver's bounded inbox (dropped when
// full), no serialization.

const (
	etcdSnapshotEvery = 8192 // applied entries between snapshots (same as raftgo's default)
	etcdTrailing      = 1024 // entries kept before a snapshot (same as raftgo's default)
	etcdInbox         = 4096 // receive queue per node (same as raftgo's)
)

var errEtcdLeadershipLost = errors.New("etcd: leadership lost while the proposal was in flight")

type etcdCluster struct {
	nodes  []*etcdNode
	leader atomic.Int32
}

type etcdNode struct {
	id      uint64
	cl      *etcdCluster
	node    eraft.Node
	storage *eraft.MemoryStorage
	inbox   chan *pb.Message
	stopc   chan struct{}
	done    sync.WaitGroup

	// Owned by the driver loop.
	count     uint64
	applied   uint64
	snapIndex uint64
	confState *pb.ConfState
	wasLeader bool
	lead      uint64

	isLeader atomic.Bool // written by the driver loop, read by proposers

	// waiters are proposals made on this node waiting to be applied here,
	// by request ID (the first 8 bytes of the command). etcd raft returns
	// no per-proposal result, so the application matches them itself.
	mu      sync.Mutex
	waiters map[uint64]chan bool
}

var etcdWaitPool = sync.Pool{New: func() any { return make(chan bool, 1) }}

func etcdConfig(id uint64, st *eraft.MemoryStorage, inflight int) *eraft.Config {
	return &eraft.Config{
		ID:                        id,
		ElectionTick:              20, // same timing as raftgo's DefaultConfig: 10ms ticks
		HeartbeatTick:             3,
		Storage:                   st,
		MaxSizePerMsg:             1 << 20, // raftgo: MaxSizePerMsg
		MaxCommittedSizePerReady:  4 << 20, // raftgo: MaxApplyBatchBytes
		MaxInflightMsgs:           inflight,
		MaxUncommittedEntriesSize: 0, // unlimited, as raftgo
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    &eraft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	}
}

func startEtcd(inflight int) (cluster, error) {
	const n = 3
	c := &etcdCluster{}
	peers := make([]eraft.Peer, n)
	for i := range peers {
		peers[i] = eraft.Peer{ID: uint64(i + 1)}
	}
	for i := range n {
		st := eraft.NewMemoryStorage()
		nd := &etcdNode{
			id:      uint64(i + 1),
			cl:      c,
			storage: st,
			inbox:   make(chan *pb.Message, etcdInbox),
			stopc:   make(chan struct{}),
			waiters: make(map[uint64]chan bool),
		}
		nd.node = eraft.StartNode(etcdConfig(nd.id, st, inflight), peers)
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.done.Add(2)
		go nd.run()
		go nd.receive()
	}
	// Elect node 1 right away instead of waiting for a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[0].node.Campaign(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.findLeader(10 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *etcdCluster) findLeader(timeout time.Duration) error {
	return waitFor(timeout, "an etcd raft leader", func() bool {
		for i, nd := range c.nodes {
			if nd.node.Status().RaftState == eraft.StateLeader {
				c.leader.Store(int32(i))
				return true
			}
		}
		return false
	})
}

// Propose proposes cmd on the leader and waits until the leader's driver
// applies it.
func (c *etcdCluster) Propose(ctx context.Context, cmd []byte) error {
	nd := c.nodes[c.leader.Load()]
	if !nd.isLeader.Load() {
		if err := c.findLeader(10 * time.Second); err != nil {
			return err
		}
		nd = c.nodes[c.leader.Load()]
	}
	id := binary.LittleEndian.Uint64(cmd)
	ch := etcdWaitPool.Get().(chan bool)
	nd.mu.Lock()
	nd.waiters[id] = ch
	nd.mu.Unlock()
	if err := nd.node.Propose(ctx, cmd); err != nil {
		nd.mu.Lock()
		_, still := nd.waiters[id]
		delete(nd.waiters, id)
		nd.mu.Unlock()
		if still {
			etcdWaitPool.Put(ch)
		}
		c.findLeader(10 * time.Second)
		return err
	}
	select {
	case ok := <-ch:
		etcdWaitPool.Put(ch)
		if !ok {
			c.findLeader(10 * time.Second)
			return errEtcdLeadershipLost
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *etcdCluster) Stop() {
	for _, nd := range c.nodes {
		close(nd.stopc)
	}
	for _, nd := range c.nodes {
		nd.done.Wait()
	}
}

// send delivers msgs to their receivers' inboxes without blocking.
func (c *etcdCluster) send(from *etcdNode, msgs []*pb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == 0 || to > uint64(len(c.nodes)) {
			continue
		}
		select {
		case c.nodes[to-1].inbox <- m:
		default: // dropped; raft retries
		}
		if m.GetType() == pb.MsgSnap {
			// In-process delivery is complete once queued.
			from.node.ReportSnapshot(to, eraft.SnapshotFinish)
		}
	}
}

func (nd *etcdNode) receive() {
	defer nd.done.Done()
	ctx := context.Background()
	for {
		select {
		case m := <-nd.inbox:
			nd.node.Step(ctx, m)
		case <-nd.stopc:
			return
		}
	}
}

// run is the driver loop, in the order etcd's documentation gives.
func (nd *etcdNode) run() {
	defer nd.done.Done()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			nd.node.Tick()
		case rd := <-nd.node.Ready():
			if rd.SoftState != nil {
				isLeader := rd.SoftState.RaftState == eraft.StateLeader
				if (nd.wasLeader && !isLeader) || rd.SoftState.Lead != nd.lead {
					// Proposals made here may be lost with the old
					// leader: their outcome is unknown.
					nd.failWaiters()
				}
				nd.wasLeader, nd.lead = isLeader, rd.SoftState.Lead
				nd.isLeader.Store(isLeader)
			}
			// 1. Persist.
			if !eraft.IsEmptySnap(rd.Snapshot) {
				nd.storage.ApplySnapshot(rd.Snapshot)
			}
			if !eraft.IsEmptyHardState(rd.HardState) {
				nd.storage.SetHardState(rd.HardState)
			}
			nd.storage.Append(rd.Entries)
			// 2. Send.
			nd.cl.send(nd, rd.Messages)
			// 3. Apply.
			if !eraft.IsEmptySnap(rd.Snapshot) {
				nd.restore(rd.Snapshot)
			}
			nd.apply(rd.CommittedEntries)
			nd.maybeSnapshot()
			// 4. Advance.
			nd.node.Advance()
		case <-nd.stopc:
			nd.node.Stop()
			nd.failWaiters()
			return
		}
	}
}

func (nd *etcdNode) apply(ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	var locked bool
	for _, e := range ents {
		if e.GetIndex() <= nd.applied {
			continue
		}
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.Data) < 8 {
				break // the empty entry a new leader appends
			}
			nd.count++
			if !locked {
				nd.mu.Lock()
				locked = true
			}
			id := binary.LittleEndian.Uint64(e.Data)
			if ch, ok := nd.waiters[id]; ok {
				delete(nd.waiters, id)
				ch <- true
			}
		case pb.EntryConfChange:
			var cc pb.ConfChange
			if err := proto.Unmarshal(e.Data, &cc); err == nil {
				nd.confState = nd.node.ApplyConfChange(&cc)
			}
		}
		nd.applied = e.GetIndex()
	}
	if locked {
		nd.mu.Unlock()
	}
}

func (nd *etcdNode) failWaiters() {
	nd.mu.Lock()
	for id, ch := range nd.waiters {
		ch <- false
		delete(nd.waiters, id)
	}
	nd.mu.Unlock()
}

func (nd *etcdNode) restore(s *pb.Snapshot) {
	if len(s.Data) >= 8 {
		nd.count = binary.LittleEndian.Uint64(s.Data)
	}
	md := s.GetMetadata()
	nd.confState = md.GetConfState()
	nd.applied, nd.snapIndex = md.GetIndex(), md.GetIndex()
}

// maybeSnapshot snapshots the counter and compacts the log every
// etcdSnapshotEvery applied entries, keeping etcdTrailing entries.
func (nd *etcdNode) maybeSnapshot() {
	if nd.applied-nd.snapIndex < etcdSnapshotEvery || nd.confState == nil {
		return
	}
	data := make([]byte, 8)
	binary.LittleEndian.PutUint64(data, nd.count)
	if _, err := nd.storage.CreateSnapshot(nd.applied, nd.confState, data); err != nil {
		return
	}
	nd.snapIndex = nd.applied
	if nd.applied > etcdTrailing {
		nd.storage.Compact(nd.applied - etcdTrailing)
	}
}
