// Package raft is an embeddable implementation of the Raft consensus
// protocol.
//
// The package has two layers. Core is the deterministic protocol: it does
// no I/O, starts no goroutine and never reads the clock, so a test can
// replay any schedule of ticks, message deliveries and crashes from a seed.
// Node wraps a Core with goroutines and three plugins: the application's
// StateMachine, a Storage for durable state and a Transport to reach the
// other nodes.
//
// # Usage
//
// An application does the following:
//
//  1. Implement StateMachine: Apply must be deterministic; Snapshot must
//     return a point-in-time view cheaply; Restore must replace the whole
//     state.
//  2. Choose a Storage: MemoryStorage for tests, the filestorage package for
//     durable state, or your own (check it with testing/storagetest).
//  3. Choose a Transport: the in-memory Network for tests, the tcptransport
//     package across machines, or your own (check it with
//     testing/transporttest).
//  4. Start each member with NewNode, the same Config.Peers on every initial
//     member (or empty Peers on a node that will join through AddVoter /
//     AddLearner on the leader).
//  5. Send writes to the leader with Propose; on *NotLeaderError retry on
//     the leader it names. Call Read before reading the local state machine
//     for a linearizable read.
//  6. Call Stop when done; every call after it returns ErrStopped.
//
// Run testing/rafttest.CheckStateMachine against your state machine to see
// it survive message loss, partitions and crashes in a simulated cluster.
package raft
