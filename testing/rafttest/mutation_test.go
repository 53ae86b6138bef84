package rafttest

import (
	"errors"
	"testing"

	"github.com/raftgo/raft"
)

// TestMutationsAreCaught switches on each known-bad protocol change and
// asserts that the CI schedules (the seeds of TestSimulation, in order)
// find a safety violation within a bounded number of seeds. A suite that
// never fails proves nothing: this proves the checks bite.
func TestMutationsAreCaught(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Options)
	}{
		{"grant a vote without the log up-to-date check", func(o *Options) { o.Mutations = raft.Mutations{VoteWithoutLogCheck: true} }},
		{"commit an entry of an earlier term by counting replicas (Figure 8)", func(o *Options) { o.Mutations = raft.Mutations{CommitPreviousTerm: true} }},
		{"set matchIndex from nextIndex-1 after a batched append", func(o *Options) { o.Mutations = raft.Mutations{MatchFromNext: true} }},
		{"acknowledge an append before it is persisted", func(o *Options) { o.AckBeforePersist = true }},
		{"keep a conflicting suffix instead of truncating it", func(o *Options) { o.Mutations = raft.Mutations{NoTruncate: true} }},
	}
	const maxSeeds = 600
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= maxSeeds; seed++ {
				o := simOptions(seed)
				tc.mutate(&o)
				_, err := checkSeed(o)
				if err == nil {
					continue
				}
				var v *Violation
				if errors.As(err, &v) && v.IsLiveness() {
					continue // only a broken safety property counts
				}
				t.Logf("caught after %d seeds: %v", seed, err)
				return
			}
			t.Fatalf("no safety violation found in %d seeds", maxSeeds)
		})
	}
}

// TestMutationsOffByDefault checks that the seeds that catch the mutations
// pass without them, so what is caught is the mutation.
func TestMutationsOffByDefault(t *testing.T) {
	for _, seed := range mutationSeeds {
		if _, err := checkSeed(simOptions(seed)); err != nil {
			t.Errorf("seed %d fails without any mutation: %v", seed, err)
		}
	}
}
