package tcptransport_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// benchmarkStream measures one-way throughput from node 1 to node 2 over
// loopback with messages like msg, sent in batches of batch, keeping at
// most half a queue in flight so nothing is dropped.
func benchmarkStream(b *testing.B, msg raft.Message, batch int, tlsOn bool) {
	cfg1, cfg2 := testConfig(1, nil), testConfig(2, nil)
	if tlsOn {
		ca := newCA(b, clusterID)
		cfg1.TLS, cfg2.TLS = nodeTLS(b, ca, 1), nodeTLS(b, ca, 2)
	}
	tr1 := listen(b, "", cfg1)
	defer tr1.Close()
	tr2 := listen(b, "", cfg2)
	defer tr2.Close()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2, Addr: tr2.Addr().String()}}
	tr1.SetPeers(peers)
	tr2.SetPeers(peers)
	var got atomic.Int64
	signal := make(chan struct{}, 1)
	tr1.Start(func(raft.Message) {})
	tr2.Start(func(raft.Message) {
		got.Add(1)
		select {
		case signal <- struct{}{}:
		default:
		}
	})
	enc, _ := msg.MarshalBinary()
	b.SetBytes(int64(len(enc) + 8))
	window := int64(512)
	msgs := make([]raft.Message, batch)
	for i := range msgs {
		msgs[i] = msg
	}
	// Connect before timing.
	tr1.Send(msgs[:1])
	for got.Load() < 1 {
		wait(signal, time.Millisecond)
	}
	got.Store(0)
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		for int64(sent+n)-got.Load() > window {
			wait(signal, time.Millisecond)
		}
		tr1.Send(msgs[:n])
		sent += n
	}
	for got.Load() < int64(b.N) {
		if tr1.Stats().MessagesDropped > 0 {
			b.Fatalf("messages dropped during the benchmark: %+v", tr1.Stats())
		}
		wait(signal, time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkStream measures messages/s and MB/s between two transports
// over loopback, for heartbeats and for 64 KiB appends, plain and TLS.
func BenchmarkStream(b *testing.B) {
	heartbeat := raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 12, Commit: 123456, Context: 99}
	app := raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 12, LogTerm: 12, Index: 1000, Commit: 999,
		Entries: []raft.Entry{{Index: 1001, Term: 12, Data: make([]byte, 64<<10)}}}
	for _, tlsOn := range []bool{false, true} {
		mode := "tcp"
		if tlsOn {
			mode = "tls"
		}
		b.Run("heartbeat/"+mode, func(b *testing.B) { benchmarkStream(b, heartbeat, 64, tlsOn) })
		b.Run("append64KiB/"+mode, func(b *testing.B) { benchmarkStream(b, app, 4, tlsOn) })
	}
}

// benchmarkPropose runs a 3-node cluster over the given transports and
// measures committed-and-applied proposals per second with 64 concurrent
// proposers.
func benchmarkPropose(b *testing.B, transports func(peers *[]raft.Server) map[raft.NodeID]raft.Transport) {
	var peers []raft.Server
	trs := transports(&peers)
	nodes := map[raft.NodeID]*raft.Node{}
	for id, tr := range trs {
		cfg := raft.DefaultConfig()
		cfg.ID, cfg.Peers = id, peers
		nd, err := raft.NewNode(cfg, &listSM{}, raft.NewMemoryStorage(), tr)
		if err != nil {
			b.Fatal(err)
		}
		nodes[id] = nd
		defer nd.Stop()
	}
	var lead *raft.Node
	deadline := time.Now().Add(30 * time.Second)
	for lead == nil {
		if time.Now().After(deadline) {
			b.Fatal("no leader elected")
		}
		for _, nd := range nodes {
			if l := nd.Leader(); l != raft.None && nodes[l] != nil && nodes[l].Leader() == l {
				lead = nodes[l]
			}
		}
		time.Sleep(5 * time.Millisecond) // polling for the election, outside the timed part
	}
	cmd := make([]byte, 128)
	ctx := context.Background()
	var failed atomic.Int64
	b.SetBytes(int64(len(cmd)))
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := lead.Propose(ctx, cmd); err != nil {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d proposals failed", f)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
}

// BenchmarkPropose3Nodes compares a 3-node cluster over loopback TCP with
// one on the in-memory Network.
func BenchmarkPropose3Nodes(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		benchmarkPropose(b, func(peers *[]raft.Server) map[raft.NodeID]raft.Transport {
			trs := map[raft.NodeID]raft.Transport{}
			for id := raft.NodeID(1); id <= 3; id++ {
				tr := listen(b, "", testConfig(id, nil))
				trs[id] = tr
				*peers = append(*peers, raft.Server{ID: id, Addr: tr.Addr().String()})
			}
			return trs
		})
	})
	b.Run("memory", func(b *testing.B) {
		nw := raft.NewNetwork(1)
		defer nw.Close()
		benchmarkPropose(b, func(peers *[]raft.Server) map[raft.NodeID]raft.Transport {
			trs := map[raft.NodeID]raft.Transport{}
			for id := raft.NodeID(1); id <= 3; id++ {
				trs[id] = nw.Transport(id)
				*peers = append(*peers, raft.Server{ID: id})
			}
			return trs
		})
	})
}
