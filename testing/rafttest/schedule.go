package rafttest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/raftgo/raft"
)

// FaultKind names a fault the simulator can inject.
type FaultKind uint8

const (
	// FaultCrash stops Node. Writes its disk had not yet synced are lost,
	// except the first Survive of them, which reached the disk just
	// before the crash without the node learning so.
	FaultCrash FaultKind = iota + 1
	// FaultRestart restarts a crashed Node from what its disk holds: a new
	// raft.Core and a new state machine restored from the stored snapshot.
	FaultRestart
	// FaultPartition cuts every link between nodes of different Groups,
	// both ways, replacing all earlier cuts (so consecutive partitions
	// move). Nodes in no group form one more group.
	FaultPartition
	// FaultOneWay cuts the links from every node of Groups[0] to every
	// node of Groups[1], in that direction only, in addition to the
	// cuts in force.
	FaultOneWay
	// FaultHeal removes every cut.
	FaultHeal
	// FaultNetwork sets the message loss, duplication and reordering
	// rates and the longest delivery delay (Delay ticks) of every link.
	FaultNetwork
	// FaultSlowDisk makes Node's disk take up to Delay ticks to persist
	// each Ready; Delay 0 restores a fast disk.
	FaultSlowDisk
	// FaultSnapshot makes Node snapshot its state machine at its applied
	// index and compact its log (keeping a few trailing entries).
	FaultSnapshot
	// FaultCampaign makes Node start an election now.
	FaultCampaign
)

var faultNames = [...]string{
	FaultCrash: "crash", FaultRestart: "restart", FaultPartition: "partition",
	FaultOneWay: "one-way", FaultHeal: "heal", FaultNetwork: "network",
	FaultSlowDisk: "slow-disk", FaultSnapshot: "snapshot", FaultCampaign: "campaign",
}

func (k FaultKind) String() string {
	if int(k) < len(faultNames) && faultNames[k] != "" {
		return faultNames[k]
	}
	return fmt.Sprintf("FaultKind(%d)", uint8(k))
}

// Fault is one fault injected at the start of tick Tick. Which fields
// matter depends on Kind (see the FaultKind constants).
type Fault struct {
	Tick int
	Kind FaultKind
	Node raft.NodeID
	// Leader, on FaultCrash and FaultPartition, aims the fault at the
	// node that leads at that moment instead (Node if none leads; for a
	// partition, the leader is isolated and Groups ignored). The node
	// restarts, or rejoins, For ticks later.
	Leader  bool
	For     int
	Groups  [][]raft.NodeID
	Survive int
	Delay   int
	// Drop, Duplicate and Reorder are probabilities (FaultNetwork).
	Drop, Duplicate, Reorder float64
}

func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "@%d %s", f.Tick, f.Kind)
	switch f.Kind {
	case FaultCrash:
		fmt.Fprintf(&b, " n%d survive=%d", f.Node, f.Survive)
		if f.Leader {
			fmt.Fprintf(&b, " (leader) for=%d", f.For)
		}
	case FaultRestart, FaultSnapshot, FaultCampaign:
		fmt.Fprintf(&b, " n%d", f.Node)
	case FaultPartition, FaultOneWay:
		if f.Leader {
			fmt.Fprintf(&b, " isolate leader (or n%d) for=%d", f.Node, f.For)
		} else {
			fmt.Fprintf(&b, " %v", f.Groups)
		}
	case FaultNetwork:
		fmt.Fprintf(&b, " drop=%.2f dup=%.2f reorder=%.2f delay=%d", f.Drop, f.Duplicate, f.Reorder, f.Delay)
	case FaultSlowDisk:
		fmt.Fprintf(&b, " n%d delay=%d", f.Node, f.Delay)
	}
	return b.String()
}

// Schedule is the list of faults of one run, in tick order.
type Schedule struct {
	Faults []Fault
}

func (s *Schedule) String() string {
	parts := make([]string, len(s.Faults))
	for i, f := range s.Faults {
		parts[i] = f.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (s *Schedule) validate(nodes int) error {
	okNode := func(id raft.NodeID) bool { return id >= 1 && int(id) <= nodes }
	for i, f := range s.Faults {
		bad := func(why string) error { return fmt.Errorf("rafttest: schedule fault %d (%v): %s", i, f, why) }
		if f.Tick < 0 {
			return bad("negative tick")
		}
		if i > 0 && f.Tick < s.Faults[i-1].Tick {
			return bad("faults are not in tick order")
		}
		switch f.Kind {
		case FaultCrash, FaultRestart, FaultSnapshot, FaultCampaign, FaultSlowDisk:
			if !okNode(f.Node) {
				return bad(fmt.Sprintf("node must be in 1..%d", nodes))
			}
			if f.Survive < 0 || f.For < 0 || f.Delay < 0 || f.Delay > 10000 {
				return bad("Survive and For must not be negative and Delay must be in [0, 10000]")
			}
		case FaultPartition, FaultOneWay:
			if f.Leader && (f.Kind != FaultPartition || !okNode(f.Node)) {
				return bad(fmt.Sprintf("a leader-aimed partition needs Kind partition and a fallback node in 1..%d", nodes))
			}
			if f.Kind == FaultOneWay && len(f.Groups) != 2 {
				return bad("a one-way cut needs exactly two groups")
			}
			for _, g := range f.Groups {
				for _, id := range g {
					if !okNode(id) {
						return bad(fmt.Sprintf("node must be in 1..%d", nodes))
					}
				}
			}
		case FaultHeal:
		case FaultNetwork:
			if !(f.Drop >= 0 && f.Drop <= 0.5) || !(f.Duplicate >= 0 && f.Duplicate <= 1) || !(f.Reorder >= 0 && f.Reorder <= 1) {
				return bad("rates must be in [0, 0.5] for Drop and [0, 1] for the others")
			}
			if f.Delay < 0 || f.Delay > 1000 {
				return bad("Delay must be in [0, 1000]")
			}
		default:
			return bad("unknown kind")
		}
	}
	return nil
}

// GenerateSchedule returns a random schedule of faults for a cluster of
// nodes nodes over ticks ticks, with the rates and counts of f.
func GenerateSchedule(r *rand.Rand, nodes, ticks int, f Faults) *Schedule {
	if nodes < 1 || ticks < 1 {
		return &Schedule{}
	}
	if f.MaxDelay == 0 {
		f.MaxDelay = 1
	}
	if f.SlowDiskTicks == 0 {
		f.SlowDiskTicks = 30
	}
	var fs []Fault
	node := func() raft.NodeID { return raft.NodeID(1 + r.IntN(nodes)) }
	at := func() int { return r.IntN(ticks) }
	fs = append(fs, Fault{Tick: 0, Kind: FaultNetwork, Drop: f.Drop, Duplicate: f.Duplicate, Reorder: f.Reorder, Delay: f.MaxDelay})
	for range f.Crashes {
		t, n := at(), node()
		survive := 0
		if r.IntN(2) == 0 {
			survive = r.IntN(4)
		}
		fs = append(fs, Fault{Tick: t, Kind: FaultCrash, Node: n, Survive: survive})
		if down := 1 + r.IntN(100); t+down < ticks {
			fs = append(fs, Fault{Tick: t + down, Kind: FaultRestart, Node: n})
		}
	}
	for range f.Partitions {
		t := at()
		moves := 1
		if r.IntN(3) == 0 {
			moves = 2 + r.IntN(3) // a moving partition
		}
		for range moves {
			fs = append(fs, randomCut(r, nodes, t))
			t += 5 + r.IntN(150)
		}
		if t < ticks {
			fs = append(fs, Fault{Tick: t, Kind: FaultHeal})
		}
	}
	for id := 1; id <= nodes; id++ {
		if f.SlowDisks > 0 && r.Float64() < f.SlowDisks {
			t := at()
			fs = append(fs, Fault{Tick: t, Kind: FaultSlowDisk, Node: raft.NodeID(id), Delay: 1 + r.IntN(f.SlowDiskTicks)})
			if end := t + 50 + r.IntN(500); end < ticks {
				fs = append(fs, Fault{Tick: end, Kind: FaultSlowDisk, Node: raft.NodeID(id)})
			}
		}
	}
	for range f.LeaderFaults {
		t, n := at(), node()
		if r.IntN(2) == 0 {
			fs = append(fs, Fault{Tick: t, Kind: FaultCrash, Node: n, Leader: true, For: 1 + r.IntN(40), Survive: r.IntN(3)})
		} else {
			fs = append(fs, Fault{Tick: t, Kind: FaultPartition, Node: n, Leader: true, For: 1 + r.IntN(40)})
		}
	}
	for range f.Snapshots {
		fs = append(fs, Fault{Tick: at(), Kind: FaultSnapshot, Node: node()})
	}
	for range f.Campaigns {
		fs = append(fs, Fault{Tick: at(), Kind: FaultCampaign, Node: node()})
	}
	slices.SortStableFunc(fs, func(a, b Fault) int { return a.Tick - b.Tick })
	for i := range fs {
		if fs[i].Tick >= ticks {
			fs = fs[:i]
			break
		}
	}
	return &Schedule{Faults: fs}
}

// randomCut returns a symmetric partition, an isolated node or a one-way
// cut.
func randomCut(r *rand.Rand, nodes, tick int) Fault {
	perm := r.Perm(nodes)
	ids := make([]raft.NodeID, nodes)
	for i, p := range perm {
		ids[i] = raft.NodeID(p + 1)
	}
	switch r.IntN(3) {
	case 0: // isolate one node
		return Fault{Tick: tick, Kind: FaultPartition, Groups: [][]raft.NodeID{ids[:1]}}
	case 1: // split in two
		k := 1 + r.IntN(max(1, nodes-1))
		return Fault{Tick: tick, Kind: FaultPartition, Groups: [][]raft.NodeID{ids[:k], ids[k:]}}
	default: // one way
		k := 1 + r.IntN(max(1, nodes-1))
		return Fault{Tick: tick, Kind: FaultOneWay, Groups: [][]raft.NodeID{ids[:k], ids[k:]}}
	}
}
