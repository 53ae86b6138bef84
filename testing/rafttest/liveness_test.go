package rafttest

import (
	"testing"

	"github.com/raftgo/raft"
)

// TestLivenessAfterHeal ends runs in the worst state the faults can leave:
// the leader crashed with unsynced writes, the others split by a
// partition, a slow disk and heavy loss. Once everything heals, a leader
// must be elected and a proposal committed within the bound
// (Options.LivenessTicks, 40 election timeouts); the worst case is
// reported.
func TestLivenessAfterHeal(t *testing.T) {
	worst := 0
	for seed := uint64(1); seed <= 40; seed++ {
		nodes := 3 + 2*int(seed%2)
		const ticks = 600
		sched := &Schedule{Faults: []Fault{
			{Tick: 0, Kind: FaultNetwork, Drop: 0.3, Delay: 2},
			{Tick: ticks - 60, Kind: FaultSlowDisk, Node: 2, Delay: 30},
			{Tick: ticks - 30, Kind: FaultCrash, Node: 1, Leader: true, For: 1000},
			{Tick: ticks - 20, Kind: FaultPartition, Groups: [][]raft.NodeID{{1, 2}, {3}}},
		}}
		o := Options{Seed: seed, Nodes: nodes, Ticks: ticks, Schedule: sched, PreVote: seed%3 != 0, CheckQuorum: true}
		res, err := Run(o)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if res.LivenessTicks < 1 || res.LivenessTicks > 40*10 {
			t.Fatalf("seed %d: liveness took %d ticks, outside [1, 400]", seed, res.LivenessTicks)
		}
		worst = max(worst, res.LivenessTicks)
	}
	t.Logf("worst case: %d ticks from heal to a committed proposal (election timeout 10-20 ticks)", worst)
}
