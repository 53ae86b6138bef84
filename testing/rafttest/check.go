package rafttest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/raftgo/raft"
)

// CheckOptions configure CheckStateMachine. Only Commands is required.
type CheckOptions struct {
	// Commands returns a new random command for the state machine. Every
	// command it returns must be valid input for Apply.
	Commands func(r *rand.Rand) []byte
	// Query and Read, if set, add linearizable reads (Core.ReadIndex) of
	// the replicas to the workload: Query returns a request, Read answers
	// it from a replica. Their results are not compared, but Read runs
	// against every kind of replica state the faults produce.
	Query func(r *rand.Rand) []byte
	Read  func(sm raft.StateMachine, query []byte) any
	// Seeds is how many seeded runs to make (default 20); FirstSeed is
	// the first seed (default 1). A failure names its seed: rerun it alone
	// with FirstSeed set to it, Seeds 1 and Trace set.
	Seeds     int
	FirstSeed uint64
	// Nodes lists the cluster sizes to cycle through (default 3 and 5).
	Nodes []int
	// Ticks is the length of each run (default 1000).
	Ticks int
	// Faults replaces the default faults: 10% message loss, duplication,
	// reordering, crashes, partitions, slow disks, and frequent snapshots
	// so that Snapshot and Restore are exercised.
	Faults *Faults
	// Trace, if set, receives the event trace of every run.
	Trace io.Writer
}

// CheckStateMachine runs the state machines made by newSM as the replicas
// of seeded, simulated clusters under message loss, partitions, crashes
// (with restarts that restore the stored snapshot) and snapshots, with
// clients proposing opts.Commands. It reports through t every seed where:
//
//   - replicas applying the same entry returned different results (Apply
//     must be deterministic);
//   - two replicas' snapshots at the same index differ (Snapshot must
//     write the same bytes for the same state);
//   - a snapshot cannot be restored, or a replica's state after the
//     faults heal and every replica has applied the same log differs from
//     the others' (compared as snapshot bytes: Restore must rebuild
//     exactly the state Snapshot saw);
//   - or the Raft safety checks of the simulator fail.
//
// It stops after three failing seeds. A panic in the state machine is
// reported with its seed.
func CheckStateMachine(t testing.TB, newSM func() raft.StateMachine, opts CheckOptions) {
	t.Helper()
	if newSM == nil || opts.Commands == nil {
		t.Fatalf("rafttest: CheckStateMachine needs newSM and CheckOptions.Commands")
		return
	}
	if opts.Seeds <= 0 {
		opts.Seeds = 20
	}
	if opts.FirstSeed == 0 {
		opts.FirstSeed = 1
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = []int{3, 5}
	}
	if opts.Ticks <= 0 {
		opts.Ticks = 1000
	}
	faults := Faults{Drop: 0.1, Duplicate: 0.05, Reorder: 0.05, Crashes: 4, Partitions: 3, SlowDisks: 0.3, Snapshots: 12, LeaderFaults: 6}
	if opts.Faults != nil {
		faults = *opts.Faults
	}
	failed := 0
	for i := range opts.Seeds {
		seed := opts.FirstSeed + uint64(i)
		o := Options{
			Nodes:           opts.Nodes[i%len(opts.Nodes)],
			Seed:            seed,
			Ticks:           opts.Ticks,
			Faults:          faults,
			PreVote:         true,
			CheckQuorum:     true,
			NewStateMachine: newSM,
			Workload:        Workload{Command: opts.Commands, Query: opts.Query, Read: opts.Read, ReadRatio: 0.2},
			Trace:           opts.Trace,
		}
		if opts.Query == nil || opts.Read == nil {
			o.Workload.Query, o.Workload.Read, o.Workload.ReadRatio = nil, nil, 0
		}
		err := runGuarded(o)
		if err == nil {
			continue
		}
		var v *Violation
		if !errors.As(err, &v) && !errors.Is(err, errPanic) {
			t.Fatalf("rafttest: CheckStateMachine: %v", err)
			return
		}
		t.Errorf("%v\n(rerun this seed alone with CheckOptions{FirstSeed: %d, Seeds: 1, Nodes: []int{%d}, Trace: os.Stderr})", err, seed, o.Nodes)
		if failed++; failed == 3 {
			return
		}
	}
}

var errPanic = errors.New("panic")

// runGuarded runs o and turns a panic (in the state machine) into an error
// naming the seed.
func runGuarded(o Options) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rafttest: seed %d (%d nodes): %w: %v", o.Seed, o.Nodes, errPanic, r)
		}
	}()
	_, err = Run(o)
	return err
}
