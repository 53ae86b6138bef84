package raft

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
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

// A leader whose own disk stalls still sees its followers commit (two of
// three are a majority), but its entries wait in its write queue, so they
// keep counting toward MaxUncommittedBytes: past the bound its proposals
// are dropped at once instead of queueing without limit.
func TestStalledLeaderDiskBoundsUncommitted(t *testing.T) {
	// A disk-like Save time, so the nodes write on their persisters
	// rather than inline on their loops (which a stall would block).
	c := newGatedCluster(t, func(cfg *Config) { cfg.MaxUncommittedBytes = 4000 },
		func(st *gatedStorage) Storage { return diskLike{st} })
	nodes, stores, lead := c.nodes, c.stores, c.lead
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c.holdLeaderDisk()
	results := make(chan error, 20)
	propose := func(i int) {
		_, err := nodes[lead].Propose(ctx, []byte(strings.Repeat(string(rune('a'+i)), 500)))
		results <- err
	}
	for i := range 8 { // 4000 bytes: all fit
		go propose(i)
	}
	// The followers persist and acknowledge them; the entries commit
	// without the leader's own write.
	waitFor(t, 10*time.Second, "the 8 entries to commit on the followers' acknowledgements", func() bool {
		st := nodes[lead].Status()
		return st.LastIndex >= 11 && st.Commit == st.LastIndex
	})
	if !stores[lead].blocked.Load() {
		t.Fatal("the leader's write is not held: the test did not stall its disk")
	}
	for i := 8; i < 20; i++ {
		go propose(i)
	}
	for dropped := 0; dropped < 12; dropped++ {
		select {
		case err := <-results:
			if !errors.Is(err, ErrProposalDropped) {
				t.Fatalf("while the leader's disk is stalled a proposal returned %v, want ErrProposalDropped", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of the 12 proposals past the bound were dropped", dropped)
		}
	}
	select {
	case err := <-results:
		t.Fatalf("an accepted proposal finished (%v) while the leader's disk is stalled", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.release()
	for range 8 {
		select {
		case err := <-results:
			if err != nil && !errors.Is(err, ErrLeadershipLost) {
				t.Fatalf("an accepted proposal failed after the disk came back: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("accepted proposals did not finish after the disk came back")
		}
	}
}

// diskLike makes every Save take at least a millisecond.
type diskLike struct{ *gatedStorage }

func (d diskLike) Save(hs HardState, ents []Entry) error {
	time.Sleep(time.Millisecond)
	return d.gatedStorage.Save(hs, ents)
}

func TestAdmitTakesThePrefixThatFits(t *testing.T) {
	c := &Core{cfg: Config{MaxUncommittedBytes: 1000}}
	cmds := func(sizes ...int) [][]byte {
		var out [][]byte
		for _, n := range sizes {
			out = append(out, make([]byte, n))
		}
		return out
	}
	for _, tc := range []struct {
		pending int
		sizes   []int
		want    int
	}{
		{0, []int{600, 600, 600}, 1}, // the first always goes when nothing is pending
		{0, []int{2000, 1}, 1},       // however large
		{0, []int{300, 300, 400, 1}, 3},
		{500, []int{400, 200}, 1},
		{500, []int{600}, 0},
	} {
		c.uncommitted = tc.pending
		if got := c.admit(cmds(tc.sizes...)); got != tc.want {
			t.Errorf("pending %d, sizes %v: admit = %d, want %d", tc.pending, tc.sizes, got, tc.want)
		}
	}
	c.cfg.MaxUncommittedBytes = 0
	if got := c.admit(cmds(5000, 5000)); got != 2 {
		t.Errorf("no limit: admit = %d, want 2", got)
	}
}
