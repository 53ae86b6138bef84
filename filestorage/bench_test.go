package filestorage

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// BenchmarkSave measures Save on this machine's disk, with fsync, for
// batches of 1, 16 and 256 entries of 128 bytes: one fsync per batch, so
// entries/s grows with the batch size (group commit).
func BenchmarkSave(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ents := make([]raft.Entry, batch)
			data := make([]byte, 128)
			for i := range ents {
				ents[i].Term, ents[i].Data = 1, data
			}
			hs := raft.HardState{Term: 1, Vote: 1}
			next := uint64(1)
			b.SetBytes(int64(batch * 128))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for i := range ents {
					ents[i].Index = next
					next++
				}
				hs.Commit = next - 1
				if err := s.Save(hs, ents); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
		})
	}
}

// BenchmarkSaveLarge measures Saves of 100 KiB (25 entries of 4 KiB, as
// under 64 durable proposers) by three storages at once on this machine's
// disk, each compacting as a node would, so that segments die. With
// reuse, new segments are written into the files of dead ones; without
// (Preallocate -1, which turns reuse off), every Save extends its file.
// Compare the two with benchstat, alternating runs: the disk's speed
// drifts more than the difference between runs far apart.
func BenchmarkSaveLarge(b *testing.B) {
	for _, mode := range []struct {
		name     string
		prealloc int64
	}{{"reuse", 0}, {"fresh", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			const writers, perSave, size = 3, 25, 4 << 10
			var sts [writers]*Storage
			for w := range sts {
				s, err := Open(b.TempDir(), Options{SegmentSize: 8 << 20, Preallocate: mode.prealloc})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				sts[w] = s
			}
			data := make([]byte, size)
			var saves atomic.Int64
			b.SetBytes(perSave * size)
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, s := range sts {
				wg.Go(func() {
					ents := make([]raft.Entry, perSave)
					next := uint64(1)
					for saves.Add(1) <= int64(b.N) {
						for i := range ents {
							ents[i] = raft.Entry{Index: next, Term: 1, Data: data}
							next++
						}
						if err := s.Save(raft.HardState{Term: 1, Commit: next - 1}, ents); err != nil {
							b.Error(err)
							return
						}
						if keep := uint64(1024); next > 2*keep && next%2048 < perSave {
							if err := s.SaveSnapshot(raft.SnapshotMeta{Index: next - keep, Term: 1}, strings.NewReader("s")); err != nil {
								b.Error(err)
								return
							}
							if err := s.Compact(next - keep); err != nil {
								b.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/writers, "syncs/s/writer")
		})
	}
}

// BenchmarkOpen measures Open and Load (recovery) of a log of
// RAFT_STORAGE_BENCH_LOG_MB megabytes (default 64; set 1024 for the 1 GB
// figure) of 1 KiB entries, from the page cache.
func BenchmarkOpen(b *testing.B) {
	mb := envInt(b, "RAFT_STORAGE_BENCH_LOG_MB", 64)
	dir := b.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const entrySize, batch = 1024, 4096
	ents := make([]raft.Entry, batch)
	data := make([]byte, entrySize)
	total := int64(mb) << 20
	var next uint64 = 1
	for written := int64(0); written < total; written += batch * entrySize {
		for i := range ents {
			ents[i] = raft.Entry{Index: next, Term: 1, Data: data}
			next++
		}
		if err := s.Save(raft.HardState{Term: 1, Commit: next - 1}, ents); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	var size int64
	matches, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	for _, m := range matches {
		fi, _ := os.Stat(m)
		size += fi.Size()
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := s.Load()
		if err != nil {
			b.Fatal(err)
		}
		if uint64(len(st.Entries)) != next-1 {
			b.Fatalf("recovered %d entries, want %d", len(st.Entries), next-1)
		}
		s.Close()
	}
	b.ReportMetric(float64(next-1), "entries")
}

// BenchmarkClusterPropose runs a 3-node cluster on an in-memory network
// and measures committed-and-applied proposals of 128 bytes per second on
// the leader, with filestorage and with raft.MemoryStorage.
func BenchmarkClusterPropose(b *testing.B) {
	for _, kind := range []string{"file", "memory"} {
		for _, proposers := range []int{1, 64} {
			b.Run(fmt.Sprintf("storage=%s/proposers=%d", kind, proposers), func(b *testing.B) {
				benchPropose(b, kind, proposers)
			})
		}
	}
}

func benchPropose(b *testing.B, kind string, proposers int) {
	net := raft.NewNetwork(1)
	defer net.Close()
	peers := []raft.Server{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := map[raft.NodeID]*raft.Node{}
	base := b.TempDir()
	for _, p := range peers {
		var st raft.Storage = raft.NewMemoryStorage()
		if kind == "file" {
			fs, err := Open(filepath.Join(base, fmt.Sprint(p.ID)), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer fs.Close()
			st = fs
		}
		cfg := raft.DefaultConfig()
		cfg.ID, cfg.Peers = p.ID, peers
		cfg.SnapshotThreshold = 0
		nd, err := raft.NewNode(cfg, &countSM{}, st, net.Transport(p.ID))
		if err != nil {
			b.Fatal(err)
		}
		defer nd.Stop()
		nodes[p.ID] = nd
	}
	var lead *raft.Node
	waitFor(b, 20*time.Second, "a leader", func() bool {
		for _, nd := range nodes {
			if nd.Leader() == nd.ID() {
				lead = nd
				return true
			}
		}
		return false
	})
	cmd := make([]byte, 128)
	for range 50 {
		if _, err := lead.Propose(context.Background(), cmd); err != nil {
			b.Fatal(err)
		}
	}
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := lead.Propose(context.Background(), cmd); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failures.Load(); f > 0 {
		b.Fatalf("%d proposals failed", f)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "proposals/s")
}

// countSM counts applied entries.
type countSM struct{ n atomic.Uint64 }

func (s *countSM) Apply(raft.Entry) any             { return s.n.Add(1) }
func (s *countSM) Snapshot() (raft.Snapshot, error) { return listSnapshot(""), nil }
func (s *countSM) Restore(io.Reader) error          { return nil }
