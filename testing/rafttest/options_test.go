package rafttest

import (
	"strings"
	"testing"

	"github.com/raftgo/raft"
)

// TestRunRejectsBadOptions checks that nonsensical options give a clear
// error, not a panic or a hang.
func TestRunRejectsBadOptions(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"too many nodes", Options{Nodes: 10}, "Nodes must be between 1 and 9"},
		{"negative nodes", Options{Nodes: -1}, "Nodes must be between 1 and 9"},
		{"drop above half", Options{Faults: Faults{Drop: 0.6}}, "Faults.Drop must be in [0, 0.5]"},
		{"heartbeat too slow", Options{ElectionTicks: 10, HeartbeatTicks: 4}, "HeartbeatTicks <= ElectionTicks/3"},
		{"query without read", Options{Workload: Workload{Query: kvQuery}}, "Query and Workload.Read must be set together"},
		{"negative counts", Options{Faults: Faults{Crashes: -1}}, "must not be negative"},
		{"schedule names unknown node", Options{Nodes: 3, Schedule: &Schedule{Faults: []Fault{{Tick: 1, Kind: FaultCrash, Node: 4}}}}, "node must be in 1..3"},
		{"membership fault names an ID beyond MaxNodes", Options{Nodes: 3, Schedule: &Schedule{Faults: []Fault{{Tick: 1, Kind: FaultAddLearner, Node: MaxNodes + 1}}}}, "IDs up to 24"},
		{"fault names a fresh node no membership fault adds", Options{Nodes: 3, Schedule: &Schedule{Faults: []Fault{{Tick: 1, Kind: FaultRemove, Node: 5}, {Tick: 2, Kind: FaultCrash, Node: 5}}}}, "or added by a membership fault"},
		{"negative reconfigurations", Options{Faults: Faults{Reconfigurations: -1}}, "must not be negative"},
		{"schedule out of order", Options{Schedule: &Schedule{Faults: []Fault{{Tick: 5, Kind: FaultHeal}, {Tick: 1, Kind: FaultHeal}}}}, "not in tick order"},
		{"one-way cut needs two groups", Options{Schedule: &Schedule{Faults: []Fault{{Kind: FaultOneWay, Groups: [][]raft.NodeID{{1}}}}}}, "exactly two groups"},
		{"unknown fault", Options{Schedule: &Schedule{Faults: []Fault{{Kind: 99}}}}, "unknown kind"},
		{"state machine constructor returns nil", Options{NewStateMachine: func() raft.StateMachine { return nil }}, "NewStateMachine returned nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestFaultKindNames checks that schedules print readably in failure
// reports.
func TestFaultKindNames(t *testing.T) {
	s := &Schedule{Faults: []Fault{{Tick: 3, Kind: FaultCrash, Node: 2, Survive: 1}, {Tick: 9, Kind: FaultPartition, Groups: [][]raft.NodeID{{1}, {2, 3}}}}}
	if got, want := s.String(), "[@3 crash n2 survive=1, @9 partition [[1] [2 3]]]"; got != want {
		t.Fatalf("Schedule.String() = %q, want %q", got, want)
	}
	if got := FaultKind(42).String(); got != "FaultKind(42)" {
		t.Fatalf("unknown kind prints %q", got)
	}
}
