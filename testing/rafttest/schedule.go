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
	// FaultAddLearner adds Node to the configuration as a learner, and
	// FaultAddVoter makes it a voter (promoting it if it is a learner).
	// A Node beyond the initial Options.Nodes is a fresh server: it is
	// started, with no configuration and empty storage, when the change
	// is first tried, and waits to be contacted by the leader.
	//
	// Membership faults are carried out one at a time, in order, through
	// raft.Core.ProposeConfChange on whichever node leads: each is retried
	// (while no leader is ready, or another change is pending) until the
	// configuration committed in the cluster reflects it, or dropped
	// after 40 election timeouts, at the heal, or when it would break a
	// rule: a removal leaves at least three voters, an addition at most
	// seven voters and at most two members beyond Options.Nodes, and a
	// removed ID is never added again.
	FaultAddLearner
	FaultAddVoter
	// FaultRemove removes Node (with Leader, instead the node that leads
	// when the change is first tried: it steps down once the change
	// commits) from the configuration. With Retire the removed node is
	// stopped once its removal has committed, and restarted from its
	// storage For ticks later if For is positive (a removed node
	// restarting with a stale configuration must not disrupt the
	// cluster); otherwise it keeps running.
	FaultRemove
)

// MaxNodes bounds the node IDs a schedule may name: the initial nodes are
// 1 to Options.Nodes, the IDs above are fresh servers that membership
// faults add.
const MaxNodes = 24

var faultNames = [...]string{
	FaultCrash: "crash", FaultRestart: "restart", FaultPartition: "partition",
	FaultOneWay: "one-way", FaultHeal: "heal", FaultNetwork: "network",
	FaultSlowDisk: "slow-disk", FaultSnapshot: "snapshot", FaultCampaign: "campaign",
	FaultAddLearner: "add-learner", FaultAddVoter: "add-voter", FaultRemove: "remove",
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
	// Retire, on FaultRemove, stops the removed node (see FaultRemove).
	Retire bool
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
	case FaultRestart, FaultSnapshot, FaultCampaign, FaultAddLearner, FaultAddVoter:
		fmt.Fprintf(&b, " n%d", f.Node)
	case FaultRemove:
		if f.Leader {
			b.WriteString(" leader")
		} else {
			fmt.Fprintf(&b, " n%d", f.Node)
		}
		if f.Retire {
			fmt.Fprintf(&b, " retire for=%d", f.For)
		}
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
	// IDs beyond the initial nodes are valid once a membership fault adds
	// them.
	added := make(map[raft.NodeID]bool)
	for _, f := range s.Faults {
		if (f.Kind == FaultAddLearner || f.Kind == FaultAddVoter) && f.Node >= 1 && int(f.Node) <= MaxNodes {
			added[f.Node] = true
		}
	}
	okNode := func(id raft.NodeID) bool { return id >= 1 && (int(id) <= nodes || added[id]) }
	where := fmt.Sprintf("node must be in 1..%d, or added by a membership fault (IDs up to %d)", nodes, MaxNodes)
	for i, f := range s.Faults {
		bad := func(why string) error { return fmt.Errorf("rafttest: schedule fault %d (%v): %s", i, f, why) }
		if f.Tick < 0 {
			return bad("negative tick")
		}
		if i > 0 && f.Tick < s.Faults[i-1].Tick {
			return bad("faults are not in tick order")
		}
		switch f.Kind {
		case FaultCrash, FaultRestart, FaultSnapshot, FaultCampaign, FaultSlowDisk, FaultAddLearner, FaultAddVoter, FaultRemove:
			// A removal may name any ID up to MaxNodes (one that is not
			// a member is dropped when its turn comes), or none if it
			// aims at the leader.
			named := okNode(f.Node)
			if f.Kind == FaultRemove {
				named = f.Leader || f.Node >= 1 && int(f.Node) <= MaxNodes
			}
			if !named {
				return bad(where)
			}
			if f.Survive < 0 || f.For < 0 || f.Delay < 0 || f.Delay > 10000 {
				return bad("Survive and For must not be negative and Delay must be in [0, 10000]")
			}
		case FaultPartition, FaultOneWay:
			if f.Leader && (f.Kind != FaultPartition || !okNode(f.Node)) {
				return bad("a leader-aimed partition needs Kind partition and a fallback node: " + where)
			}
			if f.Kind == FaultOneWay && len(f.Groups) != 2 {
				return bad("a one-way cut needs exactly two groups")
			}
			for _, g := range f.Groups {
				for _, id := range g {
					if !okNode(id) {
						return bad(where)
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
	at := func() int { return r.IntN(ticks) }
	// Membership steps come first: the other faults then hit the fresh
	// nodes too.
	ids := nodes
	if f.Reconfigurations > 0 {
		fs, ids = generateReconfigurations(r, nodes, ticks, f.Reconfigurations)
	}
	node := func() raft.NodeID { return raft.NodeID(1 + r.IntN(ids)) }
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
			fs = append(fs, randomCut(r, ids, t))
			t += 5 + r.IntN(150)
		}
		if t < ticks {
			fs = append(fs, Fault{Tick: t, Kind: FaultHeal})
		}
	}
	for id := 1; id <= ids; id++ {
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

// generateReconfigurations returns steps membership steps for a cluster
// of nodes initial nodes, and the highest node ID they name. Each step is
// one of: a fresh node joins as a learner and is promoted; a fresh node
// joins straight as a voter, or as a learner that stays one; a member is
// replaced (a fresh node joins and is promoted, then an old member is
// removed); the leader is removed; a random member is removed. A removed
// node keeps running, is stopped, or is stopped and later restarted from
// its old storage.
func generateReconfigurations(r *rand.Rand, nodes, ticks, steps int) ([]Fault, int) {
	var fs []Fault
	last := nodes // the highest ID handed out
	fresh := func() (raft.NodeID, bool) {
		if last >= MaxNodes {
			return 0, false
		}
		last++
		return raft.NodeID(last), true
	}
	remove := func(t int, id raft.NodeID, leader bool) {
		rm := Fault{Tick: t, Kind: FaultRemove, Node: id, Leader: leader}
		switch r.IntN(3) {
		case 1:
			rm.Retire = true
		case 2:
			rm.Retire, rm.For = true, 1+r.IntN(300)
		}
		fs = append(fs, rm)
	}
	for range steps {
		t := r.IntN(ticks)
		switch k := r.IntN(6); k {
		case 0, 1, 2: // join; for a replacement, then remove an old member
			id, ok := fresh()
			if !ok {
				continue
			}
			t2 := t + r.IntN(100)
			fs = append(fs, Fault{Tick: t, Kind: FaultAddLearner, Node: id}, Fault{Tick: t2, Kind: FaultAddVoter, Node: id})
			if k != 0 {
				remove(t2+r.IntN(100), raft.NodeID(1+r.IntN(last-1)), false)
			}
		case 3: // join as a voter at once, or stay a learner
			id, ok := fresh()
			if !ok {
				continue
			}
			kind := FaultAddVoter
			if r.IntN(2) == 0 {
				kind = FaultAddLearner
			}
			fs = append(fs, Fault{Tick: t, Kind: kind, Node: id})
		case 4:
			remove(t, 1, true)
		case 5:
			remove(t, raft.NodeID(1+r.IntN(last)), false)
		}
	}
	return fs, last
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
