package raft

import (
	"strings"
	"testing"
)

// A follower whose acknowledgements are lost gets no more than
// MaxInflightBytes of entry data (plus the message that crossed the bound)
// before the leader holds back; once acknowledgements flow again it
// catches up. Without the byte bound the same follower is sent everything.
func TestInflightBytesBoundAppendsToASilentFollower(t *testing.T) {
	const entry, count = 500, 50
	for _, bound := range []int{3000, 0} {
		s := newSimNet(t, 3, 1, func(c *Config) {
			c.MaxSizePerMsg = 1000
			c.MaxInflightMsgs = 100
			c.MaxInflightBytes = bound
		})
		lead := s.mustElect()
		var silent NodeID
		for _, id := range s.ids {
			if id != lead {
				silent = id
			}
		}
		sent := 0
		s.onDeliver = func(m Message) {
			if m.To == silent && m.Type == MsgApp {
				for _, e := range m.Entries {
					sent += len(e.Data)
				}
			}
		}
		s.drop = func(m Message) bool { return m.From == silent && m.Type == MsgAppResp }
		for i := range count {
			s.propose(lead, strings.Repeat(string(rune('a'+i%26)), entry))
		}
		pr := s.cores[lead].Status().Progress[silent]
		if bound > 0 {
			if sent >= bound+1000 || pr.InflightBytes != sent || sent < bound {
				t.Fatalf("bound %d: sent %d bytes to the silent follower, %d in flight; want at least %d and less than %d, all in flight",
					bound, sent, pr.InflightBytes, bound, bound+1000)
			}
		} else if sent != count*entry {
			t.Fatalf("no bound: sent %d bytes, want all %d", sent, count*entry)
		}
		s.drop = nil
		if _, ok := s.tickUntil(500, func() bool { return len(s.commands(silent)) == count }); !ok {
			t.Fatalf("bound %d: the follower applied %d of %d entries after its acknowledgements came back", bound, len(s.commands(silent)), count)
		}
	}
}

// A leader cut off from its followers accepts proposals only up to
// MaxUncommittedBytes of uncommitted entries, then drops them at once;
// when the followers are back and the entries commit, it accepts again.
func TestUncommittedBytesBoundProposals(t *testing.T) {
	s := newSimNet(t, 3, 1, func(c *Config) { c.MaxUncommittedBytes = 2000 })
	lead := s.mustElect()
	s.isolate(lead)
	cmd := []byte(strings.Repeat("x", 500))
	accepted := 0
	for range 10 {
		if _, err := s.cores[lead].Propose(cmd); err == nil {
			accepted++
		} else if err != ErrProposalDropped {
			t.Fatalf("Propose: %v, want ErrProposalDropped", err)
		}
		s.flush()
	}
	if accepted != 4 {
		t.Fatalf("the cut-off leader accepted %d proposals of 500 bytes with a 2000-byte bound, want 4", accepted)
	}
	s.heal()
	if _, ok := s.tickUntil(200, func() bool { return s.cores[lead].Status().Commit >= s.cores[lead].Status().LastIndex }); !ok {
		t.Fatal("the entries did not commit after healing")
	}
	if s.cores[lead].Role() != Leader {
		t.Fatal("leadership moved while healing")
	}
	if _, err := s.cores[lead].Propose(cmd); err != nil {
		t.Fatalf("after the entries committed, Propose: %v", err)
	}
}
