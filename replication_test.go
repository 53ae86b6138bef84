package raft

import "testing"

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
