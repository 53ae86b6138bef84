package rafttest

import (
	"bytes"
	"testing"
)

// TestSameSeedReplaysSameTrace runs seeds twice and compares the full event
// traces: the simulation is deterministic, so a failing seed replays
// exactly.
func TestSameSeedReplaysSameTrace(t *testing.T) {
	var first []byte
	// One churn profile, one mixed, one with membership changes.
	for _, seed := range []uint64{3, 4, 51} {
		var traces [2]bytes.Buffer
		var results [2]*Result
		for i := range traces {
			o := simOptions(seed)
			o.Trace = &traces[i]
			res, err := Run(o)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			results[i] = res
		}
		a, b := traces[0].Bytes(), traces[1].Bytes()
		if n := bytes.Count(a, []byte("\n")); n < 3000 {
			t.Fatalf("seed %d: trace has only %d events; expected a busy run", seed, n)
		}
		if !bytes.Equal(a, b) {
			la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
			for i := 0; i < len(la) && i < len(lb); i++ {
				if !bytes.Equal(la[i], lb[i]) {
					t.Fatalf("seed %d: traces diverge at event %d:\n  %s\n  %s", seed, i, la[i], lb[i])
				}
			}
			t.Fatalf("seed %d: traces differ in length: %d and %d events", seed, len(la), len(lb))
		}
		if seed == 51 && results[0].Stats.ConfChanges == 0 {
			t.Fatalf("seed 51 made no membership change; pick a seed that does")
		}
		if len(results[0].History) != len(results[1].History) || results[0].Stats != results[1].Stats {
			t.Fatalf("seed %d: same trace but different results: %+v vs %+v", seed, results[0].Stats, results[1].Stats)
		}
		if first != nil && bytes.Equal(first, a) {
			t.Fatalf("seed %d produced the same trace as the seed before: the seed is not used", seed)
		}
		first = a
	}
}
