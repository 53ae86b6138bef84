package rafttest

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

// simOptions derives a whole run from a seed: cluster size, configuration,
// fault profile and a key-value workload with reads. About a third of the
// seeds use the leader-churn profile (many short crashes and isolations of
// whoever leads, on slow disks), the rest a mix of every fault. A quarter
// of the seeds of either profile also change the membership (see
// withMembership).
func simOptions(seed uint64) Options {
	return withByteBounds(withMembership(baseSimOptions(seed)))
}

// withByteBounds gives a third of the seeds tight byte bounds on the
// entries in flight to each follower (Config.MaxInflightBytes, one to three
// messages' worth) and on a leader's uncommitted entries
// (Config.MaxUncommittedBytes, one to eight messages' worth), so both
// flow controls act under faults; clients retry dropped proposals. It
// draws from its own source, so the other seeds run as before.
func withByteBounds(o Options) Options {
	r := rand.New(rand.NewPCG(o.Seed, 0xb17e5))
	if r.IntN(3) != 0 {
		return o
	}
	inflight := o.MaxSizePerMsg * (1 + r.IntN(3))
	uncommitted := o.MaxSizePerMsg * (1 + r.IntN(8))
	o.Configure = func(c *raft.Config) {
		c.MaxInflightBytes, c.MaxUncommittedBytes = inflight, uncommitted
	}
	return o
}

// withMembership gives a quarter of the seeds membership changes: 3 to 8
// steps of fresh nodes joining, members replaced, followers and leaders
// removed. It draws from its own source, so the other seeds run as they
// did before membership changes were added.
func withMembership(o Options) Options {
	r := rand.New(rand.NewPCG(o.Seed, 0x3e3be5))
	if r.IntN(4) == 0 {
		o.Faults.Reconfigurations = 3 + r.IntN(6)
	}
	return o
}

// baseSimOptions is simOptions without membership changes.
func baseSimOptions(seed uint64) Options {
	r := rand.New(rand.NewPCG(seed, 0x0b7a1e))
	o := Options{
		Seed:            seed,
		Nodes:           []int{3, 3, 5}[r.IntN(3)],
		Ticks:           2000,
		PreVote:         r.IntN(3) != 0,
		CheckQuorum:     r.IntN(3) != 0,
		MaxInflightMsgs: []int{1, 2, 8, 64}[r.IntN(4)],
		MaxSizePerMsg:   []int{64, 256, 4096}[r.IntN(3)],
		NewStateMachine: newKV,
		Workload:        kvWorkload(),
	}
	// Odd seeds send a leader's appends before its own write completes,
	// as raft.Node does (derived from the seed so that adding this did
	// not change the runs of other seeds).
	o.EarlyLeaderMessages = seed%2 == 1
	o.Workload.ThinkTicks = 10
	if r.IntN(3) == 0 {
		o.Faults = Faults{Drop: []float64{0.05, 0.1, 0.2}[r.IntN(3)], LeaderFaults: 300 + r.IntN(300), SlowDisks: 1, SlowDiskTicks: 5, Snapshots: r.IntN(10)}
		return o
	}
	o.Faults = Faults{
		Drop:          []float64{0, 0.05, 0.1, 0.2, 0.3}[r.IntN(5)],
		Duplicate:     []float64{0, 0, 0.05, 0.2}[r.IntN(4)],
		Reorder:       []float64{0, 0, 0.05, 0.2}[r.IntN(4)],
		MaxDelay:      1 + r.IntN(3),
		Crashes:       r.IntN(8),
		Partitions:    r.IntN(8),
		SlowDisks:     []float64{0, 0.3, 1}[r.IntN(3)],
		SlowDiskTicks: 1 + r.IntN(40),
		Snapshots:     r.IntN(20),
		Campaigns:     r.IntN(5),
		LeaderFaults:  r.IntN(20),
	}
	return o
}

// checkSeed runs one seed and checks its history for linearizability.
func checkSeed(opts Options) (*Result, error) {
	res, err := Run(opts)
	if err != nil {
		return nil, err
	}
	if err := checkLinearizable(res.History); err != nil {
		return nil, fmt.Errorf("rafttest: seed %d (%d nodes): linearizability: %w", opts.Seed, opts.Nodes, err)
	}
	return res, nil
}

func envInt(t testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// replayHint explains how to replay a failed seed with a trace.
func replayHint(seed uint64) string {
	return fmt.Sprintf("replay with: RAFT_SIM_SEED=%d go test -run 'TestSimulation$' -v ./testing/rafttest/", seed)
}

// writeTrace reruns opts with tracing into a temporary file and returns
// its name.
func writeTrace(opts Options) string {
	f, err := os.CreateTemp("", fmt.Sprintf("rafttest-seed-%d-*.trace", opts.Seed))
	if err != nil {
		return "(cannot write trace: " + err.Error() + ")"
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	opts.Trace = w
	_, err = checkSeed(opts)
	fmt.Fprintf(w, "result: %v\n", err)
	w.Flush()
	return f.Name()
}

// TestSimulation runs RAFT_SIM_SEEDS seeded schedules (default 2000) of 3-
// and 5-node clusters for 2000 ticks each, with message loss up to 30%,
// duplication, reordering, delays, partitions (symmetric, one-way,
// moving), crashes losing unsynced writes, slow disks, snapshots and
// leader churn, checking the safety invariants after every event,
// linearizability of the client history, liveness after the faults heal
// and convergence of the replicas. RAFT_SIM_SEED=N runs only seed N and
// writes its trace.
func TestSimulation(t *testing.T) {
	if s := os.Getenv("RAFT_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RAFT_SIM_SEED=%q: %v", s, err)
		}
		opts := simOptions(seed)
		res, err := checkSeed(opts)
		t.Logf("trace (schedule in its first lines): %s", writeTrace(opts))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d passed: %+v", seed, res.Stats)
		return
	}
	seeds := envInt(t, "RAFT_SIM_SEEDS", 2000)
	// The runs allocate many short-lived objects; under the race detector
	// garbage collection dominates, so let the heap grow more.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	first := uint64(envInt(t, "RAFT_SIM_FIRST", 1))
	start := time.Now()
	var (
		mu       sync.Mutex
		failures []uint64
		worst    Result
		stats    Stats
		// reconfigured counts the runs in which a membership change
		// committed.
		reconfigured int
		next         = first
	)
	workers := 2
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= first+uint64(seeds) || len(failures) >= 5 {
					mu.Unlock()
					return
				}
				seed := next
				next++
				mu.Unlock()
				opts := simOptions(seed)
				res, err := checkSeed(opts)
				mu.Lock()
				if done := seed - first + 1; done%10000 == 0 {
					t.Logf("progress: seed %d, %v", seed, time.Since(start).Round(time.Second))
				}
				if err != nil {
					failures = append(failures, seed)
					t.Errorf("%v\n%s", err, replayHint(seed))
				} else {
					if res.LivenessTicks > worst.LivenessTicks {
						worst = *res
					}
					stats.Crashes += res.Stats.Crashes
					stats.Sent += res.Stats.Sent
					stats.Dropped += res.Stats.Dropped
					stats.Leaders += res.Stats.Leaders
					stats.Proposals += res.Stats.Proposals
					stats.Reads += res.Stats.Reads
					stats.SnapshotsSent += res.Stats.SnapshotsSent
					stats.MaxInFlight = max(stats.MaxInFlight, res.Stats.MaxInFlight)
					stats.ConfChanges += res.Stats.ConfChanges
					stats.ConfDropped += res.Stats.ConfDropped
					stats.Retired += res.Stats.Retired
					if res.Stats.ConfChanges > 0 {
						reconfigured++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds from %d in %v: %d failed %v", seeds, first, time.Since(start).Round(time.Millisecond), len(failures), failures)
	t.Logf("totals: %d crashes, %d messages sent, %d dropped, %d leaderships, %d proposals and %d reads completed, %d snapshots sent; at most %d messages in flight",
		stats.Crashes, stats.Sent, stats.Dropped, stats.Leaders, stats.Proposals, stats.Reads, stats.SnapshotsSent, stats.MaxInFlight)
	t.Logf("membership: %d runs changed it; %d changes committed, %d given up; %d removed nodes stopped", reconfigured, stats.ConfChanges, stats.ConfDropped, stats.Retired)
	t.Logf("liveness: worst case %d ticks from heal to a committed proposal (seed %d, %d nodes; bound %d)", worst.LivenessTicks, worst.Seed, worst.Nodes, 40*10)
}

// TestSevenNodeClusters runs seeds of the CI mix on 7-node clusters.
func TestSevenNodeClusters(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		o := simOptions(seed)
		o.Nodes = 7
		if _, err := checkSeed(o); err != nil {
			t.Errorf("%v", err)
		}
	}
}
