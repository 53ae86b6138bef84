package raft

import (
	"fmt"
	"slices"
	"testing"
)

// TestCoreAckThatDoesNotCommitSendsNothing checks that the follower whose
// acknowledgement does not advance the commit index gets no empty append
// carrying only the commit index (a round trip per proposal for nothing),
// and that it learns the commit index from the next append instead.
func TestCoreAckThatDoesNotCommitSendsNothing(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, nil, nil)
	c.Campaign()
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 4})
	drain(c) // the no-op at index 2
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 2})
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 4, Index: 2})
	drain(c)
	if _, err := c.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	drain(c) // index 3, appended to both followers
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 3})
	if c.log.committed != 3 {
		t.Fatalf("commit %d, want 3", c.log.committed)
	}
	if rd := drain(c); len(rd.Messages) != 0 {
		t.Fatalf("the committing acknowledgement sent %v", rd.Messages)
	}
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 4, Index: 3})
	if rd := drain(c); len(rd.Messages) != 0 {
		t.Fatalf("an acknowledgement that committed nothing sent %v", rd.Messages)
	}
	if _, err := c.Propose([]byte("y")); err != nil {
		t.Fatal(err)
	}
	rd := drain(c)
	var to3 []Message
	for _, m := range rd.Messages {
		if m.To == 3 {
			to3 = append(to3, m)
		}
	}
	if len(to3) != 1 || to3[0].Type != MsgApp || len(to3[0].Entries) != 1 || to3[0].Commit != 3 {
		t.Fatalf("next append to node 3: %v, want one MsgApp with entry 4 and commit 3", to3)
	}
}

// A follower that steps several pipelined appends before its next Ready
// answers them with one acceptance for the highest index; a rejection, or
// another message to the leader in between, is kept as it was.
func TestCoreFoldsPipelinedAcceptances(t *testing.T) {
	c := newCoreAt(t, 2, HardState{Term: 4, Commit: 1}, nil, nil)
	app := func(prev uint64, idx ...uint64) Message {
		m := Message{Type: MsgApp, From: 1, To: 2, Term: 4, Index: prev, LogTerm: 1, Commit: 1}
		if prev > 1 {
			m.LogTerm = 4
		}
		for _, i := range idx {
			m.Entries = append(m.Entries, Entry{Index: i, Term: 4})
		}
		return m
	}
	c.Step(app(1, 2))
	c.Step(app(2, 3, 4))
	c.Step(app(4, 5))
	rd := drain(c)
	if m := onlyMsg(t, rd); m.Type != MsgAppResp || m.Reject || m.Index != 5 || m.To != 1 || m.Term != 4 {
		t.Fatalf("three appends answered with %v, want one acceptance of index 5", m)
	}

	c.Step(app(5, 6))
	c.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 4, Commit: 1})
	c.Step(app(6, 7))
	c.Step(app(9, 10)) // a gap: rejected
	c.Step(app(7, 8))
	var got []string
	for _, m := range drain(c).Messages {
		got = append(got, fmt.Sprintf("%s %d %t", m.Type, m.Index, m.Reject))
	}
	want := []string{"MsgAppResp 6 false", "MsgHeartbeatResp 0 false", "MsgAppResp 7 false", "MsgAppResp 9 true", "MsgAppResp 8 false"}
	if !slices.Equal(got, want) {
		t.Fatalf("answers %q, want %q", got, want)
	}
}

func TestAppendMsgFoldsOnlyAcceptancesOfOneTermToOnePeer(t *testing.T) {
	acc := func(to NodeID, term, idx uint64) Message {
		return Message{Type: MsgAppResp, From: 9, To: to, Term: term, Index: idx}
	}
	var msgs []Message
	for _, m := range []Message{
		acc(1, 4, 5),
		acc(2, 4, 3), // another peer: kept, and does not stop the next fold
		acc(1, 4, 7), // folds into the first
		acc(1, 4, 6), // lower: the fold keeps 7
		acc(1, 5, 8), // new term: kept
	} {
		msgs = appendMsg(msgs, m)
	}
	want := []Message{acc(1, 4, 7), acc(2, 4, 3), acc(1, 5, 8)}
	if !slices.EqualFunc(msgs, want, func(a, b Message) bool { return a.String() == b.String() }) {
		t.Fatalf("got %v, want %v", msgs, want)
	}
}
