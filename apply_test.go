package raft

import "testing"

// TestApplyNowLeavesSlowWorkToTheApplier: applyNow applies a short queue on
// the calling goroutine, but leaves a snapshot to restore, or more entries
// than inlineApplyMax (a follower catching up), to the apply goroutine,
// which it wakes instead.
func TestApplyNowLeavesSlowWorkToTheApplier(t *testing.T) {
	entries := func(n int) []Entry {
		out := make([]Entry, n)
		for i := range out {
			out[i] = Entry{Index: uint64(i + 1), Term: 1, Type: EntryNormal}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		tasks  []applyTask
		inline bool
	}{
		{"short queue", []applyTask{{entries: entries(10)}}, true},
		{"long queue", []applyTask{{entries: entries(inlineApplyMax / 2)}, {entries: entries(inlineApplyMax)[inlineApplyMax/2:]}, {entries: []Entry{{Index: inlineApplyMax + 1, Term: 1}}}}, false},
		{"snapshot to restore", []applyTask{{snap: &SnapshotMeta{Index: 5, Term: 1}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm := &counterSM{}
			a := newApplier(&Node{}, sm, 0)
			for _, task := range tc.tasks {
				a.enqueue(task)
			}
			a.applyNow()
			applied, woken := a.applied.Load() > 0, len(a.notify) > 0
			if applied != tc.inline || woken == tc.inline {
				t.Fatalf("applied inline %v, apply goroutine woken %v; want applied %v", applied, woken, tc.inline)
			}
			if v := sm.violation(); v != "" {
				t.Fatal(v)
			}
		})
	}
}
