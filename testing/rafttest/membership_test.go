package rafttest

import (
	"slices"
	"testing"

	"github.com/raftgo/raft"
)

// membershipRun runs a 3-node key-value cluster with sched and checks its
// history for linearizability.
func membershipRun(t *testing.T, seed uint64, sched []Fault, prevote, checkQuorum bool) *Result {
	t.Helper()
	o := Options{
		Seed: seed, Nodes: 3, Ticks: 1200, Schedule: &Schedule{Faults: sched},
		PreVote: prevote, CheckQuorum: checkQuorum, MaxInflightMsgs: 4,
		NewStateMachine: newKV, Workload: kvWorkload(),
	}
	res, err := checkSeed(o)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	return res
}

func voters(c raft.Configuration) []raft.NodeID {
	v := c.Voters()
	slices.Sort(v)
	return v
}

// TestMembershipScenarios carries out membership changes named in the
// issue while clients write and read, with every safety check on and the
// history checked for linearizability, and asserts the changes happened.
func TestMembershipScenarios(t *testing.T) {
	loss := Fault{Tick: 0, Kind: FaultNetwork, Drop: 0.1, Delay: 1}
	cases := []struct {
		name        string
		sched       []Fault
		changes     int
		wantVoters  []raft.NodeID // nil: only the count is checked
		voterCount  int
		snapshotted bool
	}{
		{
			name: "grow from 3 to 5 voters through learners, then shrink to 3; the second joiner catches up from a snapshot",
			sched: []Fault{
				{Tick: 100, Kind: FaultAddLearner, Node: 4},
				{Tick: 150, Kind: FaultAddVoter, Node: 4},
				{Tick: 200, Kind: FaultSnapshot, Node: 1}, {Tick: 200, Kind: FaultSnapshot, Node: 2},
				{Tick: 200, Kind: FaultSnapshot, Node: 3}, {Tick: 200, Kind: FaultSnapshot, Node: 4},
				{Tick: 250, Kind: FaultAddLearner, Node: 5},
				{Tick: 300, Kind: FaultAddVoter, Node: 5},
				{Tick: 500, Kind: FaultRemove, Node: 1},
				{Tick: 600, Kind: FaultRemove, Node: 2, Retire: true},
			},
			changes: 6, wantVoters: []raft.NodeID{3, 4, 5}, snapshotted: true,
		},
		{
			name: "replace every member one by one under 10% message loss",
			sched: []Fault{
				loss,
				{Tick: 50, Kind: FaultAddLearner, Node: 4}, {Tick: 60, Kind: FaultAddVoter, Node: 4}, {Tick: 70, Kind: FaultRemove, Node: 1, Retire: true},
				{Tick: 300, Kind: FaultAddLearner, Node: 5}, {Tick: 310, Kind: FaultAddVoter, Node: 5}, {Tick: 320, Kind: FaultRemove, Node: 2, Retire: true},
				{Tick: 600, Kind: FaultAddLearner, Node: 6}, {Tick: 610, Kind: FaultAddVoter, Node: 6}, {Tick: 620, Kind: FaultRemove, Node: 3, Retire: true},
			},
			changes: 9, wantVoters: []raft.NodeID{4, 5, 6},
		},
		{
			name: "remove the leader: it steps down once the change commits and hands off",
			sched: []Fault{
				{Tick: 50, Kind: FaultAddVoter, Node: 4},
				{Tick: 300, Kind: FaultRemove, Leader: true},
				{Tick: 400, Kind: FaultAddVoter, Node: 5},
				{Tick: 500, Kind: FaultRemove, Leader: true, Retire: true},
			},
			changes: 4, voterCount: 3,
		},
		{
			name: "a removal that would leave two voters is not made",
			sched: []Fault{
				{Tick: 100, Kind: FaultRemove, Node: 2},
				{Tick: 200, Kind: FaultAddLearner, Node: 4},
			},
			changes: 1, wantVoters: []raft.NodeID{1, 2, 3},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 4; seed++ {
				res := membershipRun(t, seed, tc.sched, seed%2 == 0, true)
				if res.Stats.ConfChanges != tc.changes {
					t.Fatalf("seed %d: %d membership changes committed, want %d (final configuration %v)", seed, res.Stats.ConfChanges, tc.changes, res.Configuration.Servers)
				}
				got := voters(res.Configuration)
				if tc.wantVoters != nil && !slices.Equal(got, tc.wantVoters) {
					t.Fatalf("seed %d: final voters %v, want %v", seed, got, tc.wantVoters)
				}
				if tc.wantVoters == nil && len(got) != tc.voterCount {
					t.Fatalf("seed %d: final voters %v, want %d of them", seed, got, tc.voterCount)
				}
				if tc.snapshotted && res.Stats.SnapshotsSent == 0 {
					t.Fatalf("seed %d: no snapshot was sent; the joiner should have needed one", seed)
				}
				if res.Stats.Proposals == 0 {
					t.Fatalf("seed %d: no client write completed", seed)
				}
			}
		})
	}
}

// TestRemovedNodeRestartsFromOldStorage stops a follower before it learns
// of its removal and restarts it from its storage later: it still thinks
// it is a voter and campaigns. With pre-vote or check-quorum no leader may
// be deposed: the run has as many leaderships as the same run where it
// stays down. With neither, the stale node deposes leaders (the test shows
// the difference).
func TestRemovedNodeRestartsFromOldStorage(t *testing.T) {
	sched := func(restart bool) []Fault {
		rm := Fault{Tick: 210, Kind: FaultRemove, Node: 1, Retire: true}
		if restart {
			rm.For = 100
		}
		return []Fault{
			{Tick: 50, Kind: FaultAddVoter, Node: 4},
			{Tick: 200, Kind: FaultCrash, Node: 1}, // never restarted by the schedule
			rm,
		}
	}
	for _, tc := range []struct {
		prevote, checkQuorum, disrupted bool
	}{
		{true, true, false},
		{true, false, false},
		{false, true, false},
		{false, false, true},
	} {
		for seed := uint64(1); seed <= 3; seed++ {
			o := func(restart bool) Options {
				return Options{
					Seed: seed, Nodes: 3, Ticks: 800, Schedule: &Schedule{Faults: sched(restart)},
					PreVote: tc.prevote, CheckQuorum: tc.checkQuorum,
					NewStateMachine: newKV, Workload: kvWorkload(),
				}
			}
			quiet, err := checkSeed(o(false))
			if err != nil {
				t.Fatalf("prevote=%t checkquorum=%t seed %d, removed node left down: %v", tc.prevote, tc.checkQuorum, seed, err)
			}
			if quiet.Stats.ConfChanges != 2 || quiet.Stats.Retired != 1 {
				t.Fatalf("seed %d: %d changes and %d retired, want 2 and 1", seed, quiet.Stats.ConfChanges, quiet.Stats.Retired)
			}
			noisy, err := checkSeed(o(true))
			if err != nil {
				t.Fatalf("prevote=%t checkquorum=%t seed %d, removed node restarted: %v", tc.prevote, tc.checkQuorum, seed, err)
			}
			if got := noisy.Stats.Leaders > quiet.Stats.Leaders; got != tc.disrupted {
				t.Errorf("prevote=%t checkquorum=%t seed %d: %d leaderships with the removed node restarted, %d without; want disruption %t",
					tc.prevote, tc.checkQuorum, seed, noisy.Stats.Leaders, quiet.Stats.Leaders, tc.disrupted)
			}
		}
	}
}
