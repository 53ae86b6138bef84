package rafttest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/raftgo/raft"
)

// SubTicks is the number of simulated time steps in one tick. Network and
// disk delays are measured in these steps, so a message can arrive within
// the tick it was sent in.
const SubTicks = 10

// Options describe one simulated run. The zero value of every field but
// Seed has a usable default; see the field comments.
type Options struct {
	// Nodes is the cluster size, from 1 to 9 (default 3).
	Nodes int
	// Seed drives every random choice of the run: the same Options replay
	// the same run.
	Seed uint64
	// Ticks is how long faults and client traffic last (default 2000).
	// The run then heals every fault and checks liveness and convergence.
	Ticks int
	// Faults sets the fault rates used to generate the schedule from Seed.
	// It is ignored when Schedule is set.
	Faults Faults
	// Schedule, if not nil, is the exact list of faults to inject instead
	// of one generated from Seed and Faults (property-based tests generate
	// it with their own engine so failures shrink).
	Schedule *Schedule

	// ElectionTicks and HeartbeatTicks configure every node (defaults 10
	// and 3). PreVote and CheckQuorum are set as given.
	ElectionTicks  int
	HeartbeatTicks int
	PreVote        bool
	CheckQuorum    bool
	// MaxInflightMsgs and MaxSizePerMsg configure replication flow control
	// (defaults 8 and 256 bytes, small so that batching and pipelining are
	// exercised).
	MaxInflightMsgs int
	MaxSizePerMsg   int
	// Configure, if set, may adjust each node's configuration last.
	Configure func(*raft.Config)

	// NewStateMachine makes a replica's state machine (default: a state
	// machine that records a hash of the commands it applied).
	NewStateMachine func() raft.StateMachine
	// Workload says what clients do (default: proposals of random bytes,
	// no reads).
	Workload Workload

	// EarlyLeaderMessages makes the driver send a leader's appends and
	// heartbeats before its own write of the same Ready completes, when
	// their term is already durable, as raft.Node does (dissertation
	// section 10.2.1). Otherwise every message waits for the write.
	EarlyLeaderMessages bool

	// Mutations switches on deliberate protocol bugs in every Core, to
	// show that the checks catch them. Leave zero.
	Mutations raft.Mutations
	// AckBeforePersist makes the simulated driver send a Ready's messages
	// before its writes are durable: a deliberate bug, with which a crash
	// loses writes that other nodes were told about.
	AckBeforePersist bool

	// LivenessTicks bounds the ticks from the heal until a leader has
	// committed a new proposal (default 40 election timeouts).
	LivenessTicks int
	// Trace, if set, receives one line per simulated event.
	Trace io.Writer
}

// Faults are the rates from which a run's fault schedule is generated.
// Zero values mean no fault of that kind.
type Faults struct {
	// Drop is the probability that a message is lost, in [0, 0.5].
	Drop float64
	// Duplicate is the probability that a message is delivered twice.
	Duplicate float64
	// Reorder is the probability that a message is held back so that
	// later messages overtake it.
	Reorder float64
	// MaxDelay is the longest normal delivery delay, in ticks (default:
	// one tick).
	MaxDelay int
	// Crashes is how many node crashes (each followed by a restart) the
	// run has.
	Crashes int
	// Partitions is how many partition episodes the run has: symmetric
	// splits, one-way cuts and isolated nodes; episodes that follow each
	// other without a heal move the partition.
	Partitions int
	// SlowDisks is the probability that a node's disk is slow for a
	// stretch of the run; a slow disk takes up to SlowDiskTicks (default
	// 30) to persist one Ready.
	SlowDisks     float64
	SlowDiskTicks int
	// Snapshots is how many times a node is told to snapshot its state
	// machine and compact its log.
	Snapshots int
	// Campaigns is how many times a node is forced to start an election.
	Campaigns int
	// LeaderFaults is how many times the node leading at that moment is
	// crashed or isolated for a short while: the churn of leaderships
	// that exposes bugs like committing an earlier term's entries by
	// counting replicas (Raft paper, Figure 8).
	LeaderFaults int
	// Reconfigurations is how many membership steps the run has: fresh
	// nodes joining as learners and being promoted, members replaced,
	// followers and leaders removed (see FaultAddLearner and
	// FaultRemove). The other faults then hit the fresh nodes too.
	Reconfigurations int
}

// Workload describes the clients of a run. Clients send one request at a
// time; a proposal waits for its entry to be applied on the node it was
// proposed to, a read for a linearizable read index (Core.ReadIndex) to be
// applied on the node it was sent to.
type Workload struct {
	// Clients is the number of clients (default 3).
	Clients int
	// Command returns a new command to propose (default: 8 random bytes).
	Command func(r *rand.Rand) []byte
	// Query, if set together with Read, returns a new read request; a
	// share ReadRatio of requests are reads.
	Query     func(r *rand.Rand) []byte
	Read      func(sm raft.StateMachine, query []byte) any
	ReadRatio float64
	// ThinkTicks is the longest pause between a client's requests (default
	// 3).
	ThinkTicks int
}

func (o *Options) withDefaults() (Options, error) {
	x := *o
	if x.Nodes == 0 {
		x.Nodes = 3
	}
	if x.Ticks == 0 {
		x.Ticks = 2000
	}
	if x.ElectionTicks == 0 {
		x.ElectionTicks = 10
	}
	if x.HeartbeatTicks == 0 {
		x.HeartbeatTicks = 3
	}
	if x.MaxInflightMsgs == 0 {
		x.MaxInflightMsgs = 8
	}
	if x.MaxSizePerMsg == 0 {
		x.MaxSizePerMsg = 256
	}
	if x.Faults.MaxDelay == 0 {
		x.Faults.MaxDelay = 1
	}
	if x.Faults.SlowDiskTicks == 0 {
		x.Faults.SlowDiskTicks = 30
	}
	if x.LivenessTicks == 0 {
		x.LivenessTicks = 40 * x.ElectionTicks
	}
	if x.NewStateMachine == nil {
		x.NewStateMachine = func() raft.StateMachine { return &hashSM{} }
	}
	w := &x.Workload
	if w.Clients == 0 {
		w.Clients = 3
	}
	if w.Command == nil {
		w.Command = randomCommand
	}
	if w.ThinkTicks == 0 {
		w.ThinkTicks = 3
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("rafttest: options: "+format, args...))
	}
	if x.Nodes < 1 || x.Nodes > 9 {
		bad("Nodes must be between 1 and 9, got %d", x.Nodes)
	}
	if x.Ticks < 0 || x.Ticks > 1e7 {
		bad("Ticks must be between 1 and 10,000,000, got %d", x.Ticks)
	}
	if x.ElectionTicks < 3 || x.HeartbeatTicks < 1 || x.HeartbeatTicks*3 > x.ElectionTicks {
		bad("need ElectionTicks >= 3 and 1 <= HeartbeatTicks <= ElectionTicks/3, got %d and %d", x.ElectionTicks, x.HeartbeatTicks)
	}
	if x.MaxInflightMsgs < 0 || x.MaxSizePerMsg < 0 {
		bad("MaxInflightMsgs and MaxSizePerMsg must not be negative")
	}
	if x.LivenessTicks < 0 {
		bad("LivenessTicks must not be negative")
	}
	f := x.Faults
	for _, p := range []struct {
		name string
		v    float64
		max  float64
	}{{"Drop", f.Drop, 0.5}, {"Duplicate", f.Duplicate, 1}, {"Reorder", f.Reorder, 1}, {"SlowDisks", f.SlowDisks, 1}} {
		if !(p.v >= 0 && p.v <= p.max) {
			bad("Faults.%s must be in [0, %g], got %g", p.name, p.max, p.v)
		}
	}
	if f.MaxDelay < 0 || f.MaxDelay > 1000 || f.SlowDiskTicks < 0 || f.SlowDiskTicks > 10000 {
		bad("Faults.MaxDelay must be in [0, 1000] and Faults.SlowDiskTicks in [0, 10000]")
	}
	if f.Crashes < 0 || f.Partitions < 0 || f.Snapshots < 0 || f.Campaigns < 0 || f.LeaderFaults < 0 || f.Reconfigurations < 0 {
		bad("Faults counts must not be negative")
	}
	if w.Clients < 0 || w.Clients > 100 {
		bad("Workload.Clients must be between 0 and 100, got %d", w.Clients)
	}
	if (w.Query == nil) != (w.Read == nil) {
		bad("Workload.Query and Workload.Read must be set together")
	}
	if !(w.ReadRatio >= 0 && w.ReadRatio <= 1) {
		bad("Workload.ReadRatio must be in [0, 1], got %g", w.ReadRatio)
	}
	if w.ThinkTicks < 0 {
		bad("Workload.ThinkTicks must not be negative")
	}
	if x.Schedule != nil {
		if err := x.Schedule.validate(x.Nodes); err != nil {
			errs = append(errs, err)
		}
	}
	return x, errors.Join(errs...)
}

func randomCommand(r *rand.Rand) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
