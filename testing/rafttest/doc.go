// Package rafttest runs Raft clusters in a deterministic simulation, to test
// the raft package and the state machines, storages and configurations
// built on it.
//
// A simulated cluster is a set of raft.Core values driven by one seeded
// random source: simulated ticks instead of a clock, a simulated network
// that drops, duplicates, delays and reorders messages and can be
// partitioned (symmetrically, one way, and in patterns that move over
// time), and a simulated disk per node that models fsync: a Ready's writes
// become durable only after a (possibly long) latency, its messages leave
// only after that, and a crash loses every write not yet synced. Schedules
// may also change the membership through raft.Core.ProposeConfChange:
// fresh nodes join as learners and are promoted, members are replaced,
// followers and leaders are removed, and removed nodes keep running, stop,
// or restart from their old storage. No goroutine and no clock is
// involved, so a seed replays the same run event for event.
//
// After every event the simulator checks the Raft safety properties
// (election safety, leader append-only, log matching, leader completeness,
// state machine safety), that what a leader commits is durable on a
// majority of the voters of its configuration in force, and that a node's
// commit index never moves back. When the faults heal it checks liveness
// (a leader among the committed configuration's voters is elected and a
// proposal commits within a bound) and that every member converges to the
// same state and configuration.
//
// # Usage
//
// Most users need one call, in a test of their own state machine:
//
//	func TestMyStateMachine(t *testing.T) {
//		rafttest.CheckStateMachine(t, func() raft.StateMachine { return newMySM() },
//			rafttest.CheckOptions{Commands: func(r *rand.Rand) []byte { return randomCommand(r) }})
//	}
//
// For finer control build Options and call Run, which returns the client
// history (for a linearizability checker) and statistics, or a *Violation.
// See docs/testing.md for the faults, the checks and how to run long
// searches (RAFT_SIM_SEEDS).
package rafttest
