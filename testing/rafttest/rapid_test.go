package rafttest

import (
	"slices"
	"testing"

	"github.com/raftgo/raft"
	"pgregory.net/rapid"
)

// drawSchedule lets rapid choose every fault: which kind, when, on which
// node, for how long, and membership changes. A failing schedule shrinks
// to few, early faults.
func drawSchedule(t *rapid.T, nodes, ticks int) *Schedule {
	node := rapid.Custom(func(t *rapid.T) raft.NodeID { return raft.NodeID(rapid.IntRange(1, nodes).Draw(t, "node")) })
	group := rapid.Custom(func(t *rapid.T) []raft.NodeID {
		return rapid.SliceOfNDistinct(node, 1, nodes-1, rapid.ID[raft.NodeID]).Draw(t, "group")
	})
	// Membership faults may name up to three fresh nodes.
	anyNode := rapid.Custom(func(t *rapid.T) raft.NodeID { return raft.NodeID(rapid.IntRange(1, nodes+3).Draw(t, "id")) })
	kinds := []FaultKind{FaultCrash, FaultRestart, FaultPartition, FaultOneWay, FaultHeal, FaultNetwork, FaultSlowDisk, FaultSnapshot, FaultCampaign,
		FaultAddLearner, FaultAddVoter, FaultRemove}
	n := rapid.IntRange(0, 40).Draw(t, "faults")
	fs := make([]Fault, 0, n)
	for range n {
		f := Fault{Tick: rapid.IntRange(0, ticks-1).Draw(t, "tick"), Kind: rapid.SampledFrom(kinds).Draw(t, "kind")}
		switch f.Kind {
		case FaultCrash:
			f.Node, f.Survive = node.Draw(t, "crash"), rapid.IntRange(0, 3).Draw(t, "survive")
			if f.Leader = rapid.Bool().Draw(t, "leader"); f.Leader {
				f.For = rapid.IntRange(1, 60).Draw(t, "for")
			}
		case FaultRestart, FaultSnapshot, FaultCampaign:
			f.Node = node.Draw(t, "node")
		case FaultPartition:
			if f.Leader = rapid.Bool().Draw(t, "leader"); f.Leader {
				f.Node, f.For = node.Draw(t, "fallback"), rapid.IntRange(1, 60).Draw(t, "for")
			} else {
				f.Groups = [][]raft.NodeID{group.Draw(t, "side")}
			}
		case FaultOneWay:
			f.Groups = [][]raft.NodeID{group.Draw(t, "from"), group.Draw(t, "to")}
		case FaultNetwork:
			f.Drop = rapid.SampledFrom([]float64{0, 0.1, 0.2, 0.3, 0.5}).Draw(t, "drop")
			f.Duplicate = rapid.SampledFrom([]float64{0, 0.1}).Draw(t, "dup")
			f.Reorder = rapid.SampledFrom([]float64{0, 0.1}).Draw(t, "reorder")
			f.Delay = rapid.IntRange(1, 4).Draw(t, "delay")
		case FaultSlowDisk:
			f.Node, f.Delay = node.Draw(t, "disk"), rapid.IntRange(0, 40).Draw(t, "latency")
		case FaultAddLearner, FaultAddVoter:
			f.Node = anyNode.Draw(t, "join")
		case FaultRemove:
			if f.Leader = rapid.Bool().Draw(t, "leader"); !f.Leader {
				f.Node = anyNode.Draw(t, "leave")
			}
			if f.Retire = rapid.Bool().Draw(t, "retire"); f.Retire {
				f.For = rapid.IntRange(0, 200).Draw(t, "for")
			}
		}
		fs = append(fs, f)
	}
	slices.SortStableFunc(fs, func(a, b Fault) int { return a.Tick - b.Tick })
	return &Schedule{Faults: fs}
}

// TestPropertyRandomSchedules lets rapid generate fault schedules (and the
// seed of the rest of the run) and checks every safety property,
// linearizability, liveness after the heal and convergence. On failure
// rapid shrinks the schedule and prints how to replay it (-rapid.seed, or
// the fail file); the message names the simulation seed.
func TestPropertyRandomSchedules(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nodes := rapid.SampledFrom([]int{3, 5}).Draw(rt, "nodes")
		const ticks = 1000
		sched := drawSchedule(rt, nodes, ticks)
		o := Options{
			Seed:            rapid.Uint64().Draw(rt, "seed"),
			Nodes:           nodes,
			Ticks:           ticks,
			Schedule:        sched,
			PreVote:         rapid.Bool().Draw(rt, "prevote"),
			CheckQuorum:     rapid.Bool().Draw(rt, "checkquorum"),
			MaxInflightMsgs: rapid.SampledFrom([]int{1, 8}).Draw(rt, "inflight"),
			NewStateMachine: newKV,
			Workload:        kvWorkload(),
		}
		o.Workload.ThinkTicks = 10
		if _, err := checkSeed(o); err != nil {
			rt.Fatalf("%v\nschedule: %v", err, sched)
		}
	})
}
