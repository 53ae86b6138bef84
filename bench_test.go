package raft

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPropose measures committed-and-applied proposals per second on a
// 3-node cluster over the in-memory Network, with 128-byte commands, for
// one proposer and for 64 concurrent proposers (which lets the leader batch
// proposals and group-commit them). allocs/op counts every allocation in
// the process, on all three nodes, per proposal.
func BenchmarkPropose(b *testing.B) {
	for _, proposers := range []int{1, 64} {
		b.Run(fmt.Sprintf("proposers=%d", proposers), func(b *testing.B) {
			c := newTestCluster(b, 3, func(cfg *Config) {
				// Ticks only drive elections and heartbeats here; keep
				// them out of the way of the measurement.
				cfg.TickInterval = 10 * time.Millisecond
				cfg.SnapshotThreshold = 0
			})
			lead := c.waitLeader(20 * time.Second)
			nd := c.nodes[lead]
			cmd := make([]byte, 128)
			for i := range cmd {
				cmd[i] = byte(i)
			}
			// Warm up pools and buffers.
			for range 100 {
				if _, err := nd.Propose(context.Background(), cmd); err != nil {
					b.Fatal(err)
				}
			}
			var (
				next     atomic.Int64
				failures atomic.Int64
				wg       sync.WaitGroup
			)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range proposers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := nd.Propose(ctx, cmd); err != nil {
							failures.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if f := failures.Load(); f > 0 {
				b.Fatalf("%d of %d proposals failed", f, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			c.stopAll()
		})
	}
}
