package raft

import (
	"slices"
	"testing"
)

// TestTruncateKeepsHandedOutEntries checks that truncating a conflicting
// suffix and appending over it leaves alone the entries already handed out
// in messages and Readys: the Transport and Storage contracts promise they
// are never modified. Found by testing/rafttest (seed 19826): a deposed
// leader truncated its log while an AppendEntries it had sent was in
// flight, and the follower received a zeroed entry and an entry of a later
// term in a message of an earlier one.
func TestTruncateKeepsHandedOutEntries(t *testing.T) {
	l := newRaftLog(State{})
	for i := uint64(1); i <= 5; i++ {
		l.append(Entry{Index: i, Term: 1, Data: []byte{byte(i)}})
	}
	sent := l.slice(2, 6, 0)     // as in a MsgApp
	ready := l.unstableEntries() // as in a Ready
	wantSent, wantReady := slices.Clone(sent), slices.Clone(ready)

	l.truncateFrom(3)
	l.append(Entry{Index: 3, Term: 2, Data: []byte{33}}, Entry{Index: 4, Term: 2})

	if !entriesEqual(sent, wantSent) {
		t.Fatalf("entries in a sent message changed: %v, want %v", sent, wantSent)
	}
	if !entriesEqual(ready, wantReady) {
		t.Fatalf("entries handed out in a Ready changed: %v, want %v", ready, wantReady)
	}
	if got := l.lastIndex(); got != 4 {
		t.Fatalf("lastIndex = %d after truncating to 2 and appending 2, want 4", got)
	}
	if tm, _ := l.term(3); tm != 2 {
		t.Fatalf("term(3) = %d, want the new entry's term 2", tm)
	}
}

func entriesEqual(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool {
		return x.Index == y.Index && x.Term == y.Term && x.Type == y.Type && string(x.Data) == string(y.Data)
	})
}
