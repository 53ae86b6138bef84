package raft

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
)

// --- elections ---

// TestCoreElectsOneLeaderWithinBoundedTicks checks that a fresh cluster of
// 3 or 5 elects exactly one leader, agreed by all, within a bounded number
// of ticks, for many seeds (Raft paper, section 5.2: randomized timeouts
// make split votes rare). Election safety is checked at every step.
func TestCoreElectsOneLeaderWithinBoundedTicks(t *testing.T) {
	for _, n := range []int{3, 5} {
		for _, preVote := range []bool{false, true} {
			t.Run(fmt.Sprintf("n=%d/prevote=%t", n, preVote), func(t *testing.T) {
				const et = 10
				// The first timeout fires within 2*et ticks; allow two
				// further rounds for split votes.
				bound := 6 * et
				worst, total := 0, 0
				const seeds = 100
				for seed := uint64(1); seed <= seeds; seed++ {
					s := newSimNet(t, n, seed, func(c *Config) { c.PreVote = preVote })
					ticks, ok := s.tickUntil(bound, func() bool { return s.agreedLeader() != None })
					if !ok {
						t.Fatalf("seed %d: no agreed leader within %d ticks", seed, bound)
					}
					lead := s.agreedLeader()
					if got := s.cores[lead].Term(); got < 2 {
						t.Fatalf("seed %d: leader %d in term %d, want >= 2", seed, lead, got)
					}
					for _, id := range s.ids {
						if id != lead && s.cores[id].Role() == Leader {
							t.Fatalf("seed %d: second leader %d", seed, id)
						}
					}
					worst = max(worst, ticks)
					total += ticks
				}
				if avg := total / seeds; avg >= 3*et {
					t.Errorf("mean election took %d ticks, want < %d", avg, 3*et)
				}
				t.Logf("worst %d ticks, mean %d ticks", worst, total/seeds)
			})
		}
	}
}

func TestCoreReelectionAfterLeaderCrash(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newSimNet(t, n, 7, nil)
			lead := s.mustElect()
			term := s.cores[lead].Term()
			s.crash(lead)
			var others []NodeID
			for _, id := range s.ids {
				if id != lead {
					others = append(others, id)
				}
			}
			nl := s.mustElect(others...)
			if nl == lead || s.cores[nl].Term() <= term {
				t.Fatalf("new leader %d in term %d; old leader %d term %d", nl, s.cores[nl].Term(), lead, term)
			}
			s.restart(lead)
			if _, ok := s.tickUntil(100, func() bool { return s.cores[lead].Leader() == nl }); !ok {
				t.Fatalf("restarted node does not follow new leader %d", nl)
			}
		})
	}
}

// TestCoreStaleLeaderStepsDownAfterPartition isolates the leader; the rest
// elect a new one, and when the old one rejoins it steps down and its
// uncommitted entries are replaced.
func TestCoreStaleLeaderStepsDownAfterPartition(t *testing.T) {
	s := newSimNet(t, 3, 11, func(c *Config) { c.CheckQuorum = false })
	lead := s.mustElect()
	s.isolate(lead)
	s.propose(lead, "lost-1", "lost-2")
	var others []NodeID
	for _, id := range s.ids {
		if id != lead {
			others = append(others, id)
		}
	}
	var nl NodeID
	if _, ok := s.tickUntil(200, func() bool {
		for _, id := range others {
			if s.cores[id].Role() == Leader {
				nl = id
				return true
			}
		}
		return false
	}); !ok {
		t.Fatal("majority side elected no leader")
	}
	if s.cores[lead].Role() != Leader {
		t.Fatalf("isolated old leader should still think it leads without check-quorum")
	}
	s.propose(nl, "kept")
	s.heal()
	if _, ok := s.tickUntil(100, func() bool { return s.agreedLeader() == nl && len(s.commands(lead)) == 1 }); !ok {
		t.Fatalf("old leader did not rejoin: role %v, applied %v", s.cores[lead].Role(), s.commands(lead))
	}
	if got := s.commands(lead); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("old leader applied %v, want [kept]", got)
	}
}

// --- replication ---

func TestCoreReplicatesInSameOrder(t *testing.T) {
	s := newSimNet(t, 5, 3, nil)
	lead := s.mustElect()
	var want []string
	for i := range 30 {
		cmd := fmt.Sprintf("c%d", i)
		want = append(want, cmd)
		s.propose(lead, cmd)
		if i%7 == 0 {
			s.tick()
		}
	}
	s.tickUntil(20, func() bool { return false })
	for _, id := range s.ids {
		if got := s.commands(id); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %v, want %v", id, got, want)
		}
		// Entries applied carry consecutive indexes from 1.
		for i, e := range s.applied[id] {
			if e.Index != uint64(i+1) {
				t.Fatalf("node %d applied index %d at position %d", id, e.Index, i)
			}
		}
	}
}

func TestCoreMinorityDownStillCommits(t *testing.T) {
	s := newSimNet(t, 5, 5, nil)
	lead := s.mustElect()
	down := 0
	for _, id := range s.ids {
		if id != lead && down < 2 {
			s.crash(id)
			down++
		}
	}
	s.propose(lead, "x")
	s.tickUntil(5, func() bool { return false })
	if got := s.commands(lead); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("leader applied %v with a minority down", got)
	}
}

func TestCoreMajorityDownBlocksCommitUntilReturn(t *testing.T) {
	s := newSimNet(t, 3, 5, func(c *Config) { c.CheckQuorum = false })
	lead := s.mustElect()
	var downed []NodeID
	for _, id := range s.ids {
		if id != lead {
			s.crash(id)
			downed = append(downed, id)
		}
	}
	commit := s.cores[lead].Status().Commit
	idx := s.propose(lead, "x")
	s.tickUntil(100, func() bool { return false })
	if c := s.cores[lead].Status().Commit; c != commit || len(s.commands(lead)) != 0 {
		t.Fatalf("commit moved from %d to %d with a majority down (applied %v)", commit, c, s.commands(lead))
	}
	s.restart(downed[0])
	if _, ok := s.tickUntil(50, func() bool { return s.cores[lead].Status().Commit >= idx }); !ok {
		t.Fatalf("commit did not resume once a majority was back")
	}
	if got := s.commands(lead); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("leader applied %v", got)
	}
}

// TestCoreProgressUnderMessageLoss drops 30% of messages and still commits
// every proposal (the design's heartbeat <= election timeout / 3 rule).
func TestCoreProgressUnderMessageLoss(t *testing.T) {
	s := newSimNet(t, 3, 9, nil)
	rng := rand.New(rand.NewPCG(42, 43))
	s.drop = func(Message) bool { return rng.Float64() < 0.3 }
	committed := map[string]bool{}
	for i := 0; len(committed) < 20; i++ {
		if i > 5000 {
			t.Fatalf("only %d commands committed after %d rounds", len(committed), i)
		}
		s.tick()
		lead := s.leader()
		if lead == None || i%3 != 0 {
			continue
		}
		if _, err := s.cores[lead].Propose([]byte(fmt.Sprintf("c%d", i))); err == nil {
			s.flush()
		}
		for _, c := range s.commands(lead) {
			committed[c] = true
		}
	}
	s.drop = nil
	s.tickUntil(60, func() bool { return false })
	base := s.commands(s.ids[0])
	for _, id := range s.ids {
		if got := s.commands(id); !slices.Equal(got, base) {
			t.Fatalf("node %d applied %v, node %d applied %v", id, got, s.ids[0], base)
		}
	}
}

// TestCoreDivergentFollowerRepairedInFewRoundTrips gives a follower 60
// entries from old terms that the leader never had, and checks the leader
// fixes its log with a handful of rejections thanks to the conflict hint
// (Raft paper, section 5.3, the optimization at the end), not one per entry.
func TestCoreDivergentFollowerRepairedInFewRoundTrips(t *testing.T) {
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	confEntry := Entry{Index: 1, Term: 1, Type: EntryConfig, Data: EncodeConfiguration(Configuration{Servers: peers})}
	mk := func(from, to, term uint64, tag string) []Entry {
		var out []Entry
		for i := from; i <= to; i++ {
			out = append(out, Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("%s%d", tag, i))})
		}
		return out
	}
	common := append([]Entry{confEntry}, mk(2, 10, 2, "ok")...)
	type divergeCase struct {
		name     string
		leader   []Entry
		follower []Entry
		maxRej   int
	}
	cases := []divergeCase{
		{
			name:     "one old term, longer than leader",
			leader:   append(slices.Clone(common), mk(11, 20, 5, "new")...),
			follower: append(slices.Clone(common), mk(11, 80, 3, "old")...),
			maxRej:   2,
		},
		{
			name:     "two old terms",
			leader:   append(slices.Clone(common), mk(11, 20, 5, "new")...),
			follower: append(append(slices.Clone(common), mk(11, 40, 3, "old")...), mk(41, 75, 4, "older")...),
			maxRej:   3,
		},
		{
			name:     "follower far behind",
			leader:   append(slices.Clone(common), mk(11, 90, 5, "new")...),
			follower: slices.Clone(common),
			maxRej:   2,
		},
		{
			name:     "leader holds the follower's old term too",
			leader:   append(append(slices.Clone(common), mk(11, 15, 3, "old")...), mk(16, 30, 5, "new")...),
			follower: append(slices.Clone(common), mk(11, 80, 3, "old")...),
			maxRej:   2,
		},
	}
	type run struct {
		name   string
		noHint bool
	}
	var runs []run
	for _, tc := range cases {
		runs = append(runs, run{tc.name, false})
	}
	// Control: without the hint the same repair takes one rejection per
	// entry, which shows the count measures what it should.
	runs = append(runs, run{cases[0].name, true})
	for _, r := range runs {
		tc := cases[slices.IndexFunc(cases, func(c divergeCase) bool { return c.name == r.name })]
		t.Run(fmt.Sprintf("%s/nohint=%t", r.name, r.noHint), func(t *testing.T) {
			s := newSimNet(t, 3, 1, func(c *Config) { c.PreVote = false })
			if r.noHint {
				s.rewrite = func(m Message) Message {
					if m.Type == MsgAppResp && m.Reject {
						m.RejectHint, m.LogTerm = m.Index, 0
					}
					return m
				}
			}
			lastTerm := tc.leader[len(tc.leader)-1].Term
			set := func(id NodeID, ents []Entry, term uint64) {
				st := NewMemoryStorage()
				if err := st.Save(HardState{Term: term, Commit: 10}, ents); err != nil {
					t.Fatal(err)
				}
				s.stores[id] = st
				s.boot(id)
			}
			set(1, tc.leader, lastTerm)
			set(2, tc.leader, lastTerm) // node 2 agrees with the leader
			set(3, tc.follower, lastTerm)
			s.crash(3)
			s.cores[1].Campaign()
			s.flush()
			if s.cores[1].Role() != Leader {
				t.Fatalf("node 1 did not win: %v", s.cores[1].Role())
			}
			rejections, appends := 0, 0
			s.onDeliver = func(m Message) {
				if m.From == 3 && m.Type == MsgAppResp && m.Reject {
					rejections++
				}
				if m.To == 3 && m.Type == MsgApp {
					appends++
				}
			}
			delete(s.down, 3)
			s.cores[1].bcastHeartbeat()
			s.flush()
			want := s.cores[1].log.lastIndex()
			if _, ok := s.tickUntil(10, func() bool { return s.cores[3].Status().Commit == want }); !ok {
				t.Fatalf("follower not repaired: commit %d, want %d", s.cores[3].Status().Commit, want)
			}
			for i := uint64(1); i <= want; i++ {
				lt, _ := s.cores[1].log.term(i)
				ft, _ := s.cores[3].log.term(i)
				if lt != ft || !bytes.Equal(s.cores[1].log.entry(i).Data, s.cores[3].log.entry(i).Data) {
					t.Fatalf("index %d: leader term %d, follower term %d", i, lt, ft)
				}
			}
			if got := s.cores[3].log.lastIndex(); got != want {
				t.Fatalf("follower last index %d, want %d (stale suffix kept)", got, want)
			}
			if r.noHint {
				if rejections <= tc.maxRej {
					t.Fatalf("control without hints took only %d rejections", rejections)
				}
			} else if rejections > tc.maxRej {
				t.Fatalf("%d rejections to repair the follower, want <= %d", rejections, tc.maxRej)
			}
			t.Logf("%d rejections, %d appends", rejections, appends)
		})
	}
}

// --- stale and future terms ---

// newCoreAt returns a Core of a 3-node cluster {1,2,3} with the given log
// (after the bootstrap config entry at index 1) and hard state.
func newCoreAt(t *testing.T, id NodeID, hs HardState, terms []uint64, tweak func(*Config)) *Core {
	t.Helper()
	peers := []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	ents := []Entry{{Index: 1, Term: 1, Type: EntryConfig, Data: EncodeConfiguration(Configuration{Servers: peers})}}
	for i, term := range terms {
		ents = append(ents, Entry{Index: uint64(i + 2), Term: term})
	}
	cfg := simConfig(id)
	cfg.Peers = peers
	cfg.PreVote, cfg.CheckQuorum = false, false
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := NewCore(cfg, State{HardState: hs, Entries: ents}, rand.New(rand.NewPCG(1, uint64(id))))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// drain returns the messages of the next Ready and advances.
func drain(c *Core) Ready {
	rd := c.Ready()
	c.Advance(rd)
	return rd
}

func onlyMsg(t *testing.T, rd Ready) Message {
	t.Helper()
	if len(rd.Messages) != 1 {
		t.Fatalf("want 1 message, got %d: %v", len(rd.Messages), rd.Messages)
	}
	return rd.Messages[0]
}

func TestCoreVoteHandling(t *testing.T) {
	// Voter 1 is at term 3 with log [1:t1, 2:t2, 3:t3].
	base := HardState{Term: 3, Commit: 1}
	logTerms := []uint64{2, 3}
	cases := []struct {
		name      string
		hs        HardState
		m         Message
		wantGrant bool
		wantResp  bool
		wantTerm  uint64
		wantVote  NodeID
	}{
		{"stale term is ignored", base, Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 9, LogTerm: 9}, false, false, 3, None},
		{"future term, up-to-date log", base, Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3}, true, true, 4, 2},
		{"future term, longer log", base, Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 9, LogTerm: 3}, true, true, 4, 2},
		{"future term, higher last term", base, Message{Type: MsgVote, From: 2, To: 1, Term: 5, Index: 2, LogTerm: 4}, true, true, 5, 2},
		{"future term, shorter log", base, Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 2, LogTerm: 3}, false, true, 4, None},
		{"future term, lower last term", base, Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 50, LogTerm: 2}, false, true, 4, None},
		{"same term, already voted for another", HardState{Term: 3, Vote: 3, Commit: 1}, Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 3}, false, true, 3, 3},
		{"same term, repeated request from the one voted for", HardState{Term: 3, Vote: 2, Commit: 1}, Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 3}, true, true, 3, 2},
		{"pre-vote does not change term or vote", base, Message{Type: MsgPreVote, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3}, true, true, 3, None},
		{"pre-vote with stale log is refused", base, Message{Type: MsgPreVote, From: 2, To: 1, Term: 4, Index: 2, LogTerm: 2}, false, true, 3, None},
		{"stale pre-vote is refused", base, Message{Type: MsgPreVote, From: 2, To: 1, Term: 2, Index: 3, LogTerm: 3}, false, true, 3, None},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCoreAt(t, 1, tc.hs, logTerms, nil)
			drain(c)
			c.Step(tc.m)
			rd := drain(c)
			if c.Term() != tc.wantTerm || c.vote != tc.wantVote {
				t.Fatalf("term %d vote %d, want term %d vote %d", c.Term(), c.vote, tc.wantTerm, tc.wantVote)
			}
			if !tc.wantResp {
				if len(rd.Messages) != 0 {
					t.Fatalf("want no answer, got %v", rd.Messages)
				}
				return
			}
			m := onlyMsg(t, rd)
			if m.To != 2 || m.Reject == tc.wantGrant {
				t.Fatalf("answer %v, want grant=%t", m, tc.wantGrant)
			}
			if tc.wantGrant && tc.m.Type == MsgVote && tc.hs.Vote != 2 {
				// Persist-before-respond: the vote is in the same Ready
				// as the message and must be synced first.
				if !rd.MustSync || rd.HardState.Vote != 2 || rd.HardState.Term != tc.wantTerm {
					t.Fatalf("granting Ready does not persist the vote: %+v", rd.HardState)
				}
			}
		})
	}
}

func TestCoreAppendStaleAndFutureTerms(t *testing.T) {
	t.Run("stale append is refused with our term", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 5, Commit: 1}, []uint64{2, 3}, nil)
		drain(c)
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3, Entries: []Entry{{Index: 4, Term: 4}}, Commit: 4})
		m := onlyMsg(t, drain(c))
		if m.Type != MsgAppResp || !m.Reject || m.Term != 5 {
			t.Fatalf("want a rejection carrying term 5, got %v", m)
		}
		if c.log.lastIndex() != 3 || c.log.committed != 1 || c.Leader() != None {
			t.Fatalf("stale append changed state: last %d commit %d leader %d", c.log.lastIndex(), c.log.committed, c.Leader())
		}
	})
	t.Run("future append makes us follow the sender", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 3, Vote: 1, Commit: 1}, []uint64{2, 3}, nil)
		drain(c)
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 7, Index: 3, LogTerm: 3, Entries: []Entry{{Index: 4, Term: 7, Data: []byte("a")}}, Commit: 4})
		rd := drain(c)
		m := onlyMsg(t, rd)
		if m.Reject || m.Index != 4 || m.Term != 7 {
			t.Fatalf("want ack of index 4 in term 7, got %v", m)
		}
		if c.Term() != 7 || c.vote != None || c.Leader() != 2 || c.Role() != Follower {
			t.Fatalf("term %d vote %d leader %d role %v", c.Term(), c.vote, c.Leader(), c.Role())
		}
		if len(rd.Entries) != 1 || rd.Entries[0].Index != 4 || !rd.MustSync || rd.HardState.Term != 7 {
			t.Fatalf("Ready does not persist the new entry and term: %+v", rd)
		}
		if c.log.committed != 4 {
			t.Fatalf("commit %d, want 4", c.log.committed)
		}
	})
	t.Run("leader steps down on a response from a higher term", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, []uint64{2, 3}, nil)
		c.Campaign()
		c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 4})
		if c.Role() != Leader {
			t.Fatalf("role %v, want leader", c.Role())
		}
		drain(c)
		c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 9, Reject: true, Index: 3})
		if c.Role() != Follower || c.Term() != 9 || c.Leader() != None {
			t.Fatalf("role %v term %d leader %d, want follower in 9", c.Role(), c.Term(), c.Leader())
		}
		if _, err := c.Propose([]byte("x")); !isNotLeader(err) {
			t.Fatalf("propose after stepping down: %v", err)
		}
	})
	t.Run("candidate yields to a leader of its term", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, []uint64{2, 3}, nil)
		c.Campaign()
		drain(c)
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3, Commit: 1})
		if c.Role() != Follower || c.Leader() != 2 || c.Term() != 4 {
			t.Fatalf("role %v leader %d term %d", c.Role(), c.Leader(), c.Term())
		}
		if m := onlyMsg(t, drain(c)); m.Reject || m.Index != 3 {
			t.Fatalf("want ack of 3, got %v", m)
		}
	})
	t.Run("conflicting suffix is truncated", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 4, Commit: 2}, []uint64{2, 3, 3, 3}, nil)
		drain(c)
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3, Entries: []Entry{{Index: 4, Term: 4, Data: []byte("n")}}, Commit: 2})
		rd := drain(c)
		if m := onlyMsg(t, rd); m.Reject || m.Index != 4 {
			t.Fatalf("want ack of 4, got %v", m)
		}
		if c.log.lastIndex() != 4 || c.log.lastTerm() != 4 {
			t.Fatalf("log ends at %d/%d, want 4/4", c.log.lastIndex(), c.log.lastTerm())
		}
		if len(rd.Entries) != 1 || rd.Entries[0].Term != 4 {
			t.Fatalf("Ready should persist the replacement entry: %v", rd.Entries)
		}
	})
	t.Run("mismatch carries the conflict hint", func(t *testing.T) {
		// Follower log: 1:t1 2:t2 3:t3 4:t3 5:t3.
		c := newCoreAt(t, 1, HardState{Term: 6, Commit: 1}, []uint64{2, 3, 3, 3}, nil)
		drain(c)
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 6, Index: 5, LogTerm: 5, Commit: 1})
		m := onlyMsg(t, drain(c))
		if !m.Reject || m.Index != 5 || m.LogTerm != 3 || m.RejectHint != 3 {
			t.Fatalf("want reject of 5 with hint term 3 index 3, got %v", m)
		}
		c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 6, Index: 9, LogTerm: 5, Commit: 1})
		m = onlyMsg(t, drain(c))
		if !m.Reject || m.RejectHint != 6 || m.LogTerm != 0 {
			t.Fatalf("want reject with hint index 6 (our last+1), got %v", m)
		}
	})
	t.Run("stale heartbeat is answered so the old leader learns the term", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 5, Commit: 1}, nil, nil)
		drain(c)
		c.Step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 3})
		if m := onlyMsg(t, drain(c)); m.Term != 5 || !m.Reject {
			t.Fatalf("want rejection at term 5, got %v", m)
		}
	})
	t.Run("malformed messages are dropped", func(t *testing.T) {
		c := newCoreAt(t, 1, HardState{Term: 5, Commit: 1}, nil, nil)
		drain(c)
		for _, m := range []Message{
			{Type: 0, From: 2, To: 1, Term: 9},
			{Type: msgTypeEnd, From: 2, To: 1, Term: 9},
			{Type: MsgApp, From: 0, To: 1, Term: 9},
			{Type: MsgApp, From: 1, To: 1, Term: 9},
			{Type: MsgApp, From: 2, To: 3, Term: 9},
		} {
			c.Step(m)
		}
		if c.Term() != 5 || c.HasReady() {
			t.Fatalf("malformed message had an effect: term %d", c.Term())
		}
	})
}

func isNotLeader(err error) bool {
	var nl *NotLeaderError
	return errors.As(err, &nl)
}

// TestCoreCommitsOnlyCurrentTermByCounting is the Figure 8 case (Raft
// paper, section 5.4.2): a new leader does not commit an old-term entry by
// counting replicas, only through an entry of its own term.
func TestCoreCommitsOnlyCurrentTermByCounting(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, []uint64{2}, nil)
	c.Campaign()
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 4})
	if c.Role() != Leader {
		t.Fatal("not leader")
	}
	drain(c) // persists the no-op at index 3
	if c.log.lastIndex() != 3 || c.log.entry(3).Type != EntryNoop || c.log.entry(3).Term != 4 {
		t.Fatalf("no no-op of term 4 at index 3")
	}
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 2})
	if c.log.committed != 1 {
		t.Fatalf("committed %d by counting replicas of a term-2 entry", c.log.committed)
	}
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 3})
	if c.log.committed != 3 {
		t.Fatalf("committed %d, want 3 once the no-op is on a majority", c.log.committed)
	}
}

// TestCoreMatchIsTheAcknowledgedIndex checks that matchIndex comes from the
// follower's acknowledgement, not from nextIndex-1, under pipelining.
func TestCoreMatchIsTheAcknowledgedIndex(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, nil, nil)
	c.Campaign()
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 4})
	drain(c)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 2}) // replicate state
	drain(c)
	for i := range 5 {
		if _, err := c.Propose([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain(c)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 4})
	if pr := c.prs[2]; pr.match != 4 || pr.next != 8 {
		t.Fatalf("match %d next %d, want match 4 (acknowledged), next 8 (pipelined)", pr.match, pr.next)
	}
	if c.log.committed != 4 {
		t.Fatalf("commit %d, want 4", c.log.committed)
	}
}

// TestCoreLeaderCountsItselfOnlyWhenDurable checks that a leader's own
// entries count toward commit only after Advance says they are persisted.
func TestCoreLeaderCountsItselfOnlyWhenDurable(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, nil, nil)
	c.Campaign()
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 4})
	drain(c)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 2})
	drain(c)
	if _, err := c.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	rd := c.Ready() // not yet durable
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 4, Index: 3})
	if c.log.committed == 3 {
		// node 3 acked 3, node 2 has 2, the leader has not persisted 3: only
		// one of three holds index 3.
		t.Fatal("leader counted its own unpersisted entry")
	}
	c.Advance(rd)
	if c.log.committed != 3 {
		t.Fatalf("commit %d after persisting, want 3", c.log.committed)
	}
}

// TestCoreRestartKeepsHardStateAndLog restarts every Core from its
// MemoryStorage and checks term, vote and log survive exactly.
func TestCoreRestartKeepsHardStateAndLog(t *testing.T) {
	s := newSimNet(t, 3, 21, nil)
	lead := s.mustElect()
	s.propose(lead, "a", "b", "c")
	// Followers learn the commit index with the next heartbeat.
	if _, ok := s.tickUntil(20, func() bool {
		for _, id := range s.ids {
			if s.cores[id].log.committed != s.cores[lead].log.committed {
				return false
			}
		}
		return true
	}); !ok {
		t.Fatal("followers never learned the commit index")
	}
	type snap struct {
		term uint64
		vote NodeID
		ents []Entry
	}
	before := map[NodeID]snap{}
	for _, id := range s.ids {
		c := s.cores[id]
		before[id] = snap{c.Term(), c.vote, slices.Clone(c.log.entries)}
		s.crash(id)
	}
	for _, id := range s.ids {
		s.boot(id)
		c := s.cores[id]
		b := before[id]
		if c.Term() != b.term || c.vote != b.vote {
			t.Fatalf("node %d: term %d vote %d after restart, want %d %d", id, c.Term(), c.vote, b.term, b.vote)
		}
		if len(c.log.entries) != len(b.ents) {
			t.Fatalf("node %d: %d entries after restart, want %d", id, len(c.log.entries), len(b.ents))
		}
		for i := range b.ents {
			e, f := b.ents[i], c.log.entries[i]
			if e.Index != f.Index || e.Term != f.Term || e.Type != f.Type || !bytes.Equal(e.Data, f.Data) {
				t.Fatalf("node %d: entry %d differs after restart: %+v vs %+v", id, i, f, e)
			}
		}
	}
	for _, id := range s.ids {
		delete(s.down, id)
	}
	// The stored commit index may lag; a new leader's first commit tells
	// every node how far to re-apply.
	s.mustElect()
	s.tickUntil(50, func() bool {
		for _, id := range s.ids {
			if len(s.commands(id)) < 3 {
				return false
			}
		}
		return true
	})
	for _, id := range s.ids {
		if got := s.commands(id); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("node %d re-applied %v after restart", id, got)
		}
	}
}

// --- pre-vote and check-quorum ---

// TestCorePreVoteKeepsLeaderTermOnRejoin isolates a follower for many
// election timeouts and heals the partition: with pre-vote the leader keeps
// its term and leadership; without, the rejoining node's inflated term
// deposes it (which shows the test can tell). Each case runs many seeds,
// since whether the rejoining node's timer or the leader's heartbeat comes
// first varies.
func TestCorePreVoteKeepsLeaderTermOnRejoin(t *testing.T) {
	cases := []struct {
		name        string
		preVote     bool
		checkQuorum bool
		writes      bool // the leader commits entries during the partition
		wantBump    bool
	}{
		{"pre-vote and check-quorum", true, true, false, false},
		{"pre-vote only, follower log up to date", true, false, false, false},
		{"pre-vote only, follower log behind", true, false, true, false},
		{"no pre-vote (control)", false, false, true, true},
		{"check-quorum only (control)", false, true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 40; seed++ {
				s := newSimNet(t, 3, seed, func(c *Config) { c.PreVote, c.CheckQuorum = tc.preVote, tc.checkQuorum })
				lead := s.mustElect()
				term := s.cores[lead].Term()
				var iso NodeID
				for _, id := range s.ids {
					if id != lead {
						iso = id
						break
					}
				}
				s.isolate(iso)
				if tc.writes {
					s.propose(lead, "during-partition")
				}
				for range 100 * 10 { // 100 election timeouts
					s.tick()
				}
				if tc.preVote && s.cores[iso].Term() != term {
					t.Fatalf("seed %d: isolated pre-voting node bumped its term to %d", seed, s.cores[iso].Term())
				}
				s.heal()
				s.tickUntil(60, func() bool { return false })
				bumped := s.cores[lead].Term() != term || s.cores[lead].Role() != Leader
				if bumped != tc.wantBump {
					t.Fatalf("seed %d: leader term %d -> %d, role %v; want bump=%t", seed, term, s.cores[lead].Term(), s.cores[lead].Role(), tc.wantBump)
				}
				if nl := s.mustElect(); tc.writes && !slices.Contains(s.commands(iso), "during-partition") {
					t.Fatalf("seed %d: rejoined node did not catch up under leader %d: %v", seed, nl, s.commands(iso))
				}
			}
		})
	}
}

// TestCorePreVoteRejectedWhileLeaderHeard: a follower that heard from its
// leader within the election timeout refuses a pre-vote even with a
// better log and without check-quorum (dissertation section 9.6), and
// grants it once the leader has been silent for an election timeout.
func TestCorePreVoteRejectedWhileLeaderHeard(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, nil, func(cfg *Config) { cfg.PreVote = true })
	drain(c)
	c.Step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 3})
	drain(c)
	pv := Message{Type: MsgPreVote, From: 3, To: 1, Term: 4, Index: 9, LogTerm: 3}
	c.Step(pv)
	if m := onlyMsg(t, drain(c)); !m.Reject || m.Term != 3 || c.Term() != 3 {
		t.Fatalf("pre-vote while the leader is heard: %v (our term %d), want a rejection at term 3", m, c.Term())
	}
	for range 9 {
		c.Tick() // randomized timeout >= 10: no campaign yet
	}
	drain(c)
	c.Tick()
	c.Step(pv)
	rd := drain(c)
	var resp *Message
	for i := range rd.Messages {
		if rd.Messages[i].Type == MsgPreVoteResp {
			resp = &rd.Messages[i]
		}
	}
	if resp == nil || resp.Reject || resp.Term != 4 || c.Term() != 3 {
		t.Fatalf("pre-vote after an election timeout of silence: %v (our term %d), want a grant at term 4", resp, c.Term())
	}
}

// TestCoreCheckQuorumStepDown isolates the leader: with check-quorum it
// steps down within two election timeouts; without, it stays leader.
func TestCoreCheckQuorumStepDown(t *testing.T) {
	for _, cq := range []bool{true, false} {
		t.Run(fmt.Sprint("checkQuorum=", cq), func(t *testing.T) {
			s := newSimNet(t, 3, 4, func(c *Config) { c.CheckQuorum = cq })
			lead := s.mustElect()
			s.isolate(lead)
			_, stepped := s.tickUntil(2*10+1, func() bool { return s.cores[lead].Role() != Leader })
			if stepped != cq {
				t.Fatalf("leader stepped down: %t, want %t", stepped, cq)
			}
			if cq && s.cores[lead].Leader() != None {
				t.Fatalf("stepped-down leader still names leader %d", s.cores[lead].Leader())
			}
		})
	}
}

// TestCoreCheckQuorumLeaseIgnoresDisruptiveVotes: a follower that heard
// from its leader within the election timeout ignores a vote request of a
// higher term (dissertation section 4.2.3).
func TestCoreCheckQuorumLeaseIgnoresDisruptiveVotes(t *testing.T) {
	c := newCoreAt(t, 1, HardState{Term: 3, Commit: 1}, nil, func(cfg *Config) { cfg.CheckQuorum = true })
	drain(c)
	c.Step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 3})
	drain(c)
	c.Step(Message{Type: MsgVote, From: 3, To: 1, Term: 4, Index: 5, LogTerm: 3})
	if rd := drain(c); c.Term() != 3 || len(rd.Messages) != 0 {
		t.Fatalf("in-lease follower reacted to a vote: term %d msgs %v", c.Term(), rd.Messages)
	}
	// A transfer-forced election is honoured.
	c.Step(Message{Type: MsgVote, From: 3, To: 1, Term: 4, Index: 5, LogTerm: 3, Context: contextTransfer})
	if m := onlyMsg(t, drain(c)); m.Reject || c.Term() != 4 {
		t.Fatalf("forced vote not granted: %v term %d", m, c.Term())
	}
}

func TestCoreProposeOnFollowerNamesLeader(t *testing.T) {
	s := newSimNet(t, 3, 8, nil)
	lead := s.mustElect()
	for _, id := range s.ids {
		if id == lead {
			continue
		}
		_, err := s.cores[id].Propose([]byte("x"))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || nl.Leader != lead {
			t.Fatalf("propose on follower %d: %v, want NotLeaderError naming %d", id, err, lead)
		}
	}
}

// TestCoreReadIndex checks ReadIndex on the leader and on followers: each
// read gets an index covering a write committed before it (dissertation
// section 6.4), and a leader that lost its quorum fails reads.
func TestCoreReadIndex(t *testing.T) {
	s := newSimNet(t, 3, 12, nil)
	lead := s.mustElect()
	idx := s.propose(lead, "w")
	for _, id := range s.ids {
		if err := s.cores[id].ReadIndex(uint64(100 + id)); err != nil {
			t.Fatalf("ReadIndex on %d: %v", id, err)
		}
	}
	s.flush()
	for _, id := range s.ids {
		rs := s.reads[id]
		if len(rs) != 1 || rs[0].Context != uint64(100+id) || rs[0].Index < idx {
			t.Fatalf("node %d: read states %v, want one with context %d and index >= %d", id, rs, 100+id, idx)
		}
	}
	// An isolated leader cannot confirm its leadership: the read waits and
	// fails when it steps down.
	s.isolate(lead)
	if err := s.cores[lead].ReadIndex(7); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if n := len(s.reads[lead]); n != 1 {
		t.Fatalf("isolated leader answered a read: %v", s.reads[lead])
	}
	s.tickUntil(30, func() bool { return len(s.reads[lead]) > 1 })
	if rs := s.reads[lead]; len(rs) != 2 || rs[1].Context != 7 || rs[1].Index != 0 {
		t.Fatalf("read on a deposed leader: %v, want a failure (index 0)", rs)
	}
}

// TestCoreRandomFaultsKeepStateMachineSafety drives 5-node clusters through
// random message loss, crashes with restarts from storage, and partitions,
// and checks after every tick that all nodes applied the same entries at
// the same indexes (state machine safety, Raft paper section 5.4.3), with
// election safety checked at every step by the harness. Once the faults
// stop, the cluster must converge and commit again.
func TestCoreRandomFaultsKeepStateMachineSafety(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 5
	}
	if v, err := strconv.Atoi(os.Getenv("RAFT_SIM_SEEDS")); err == nil && v > 0 {
		seeds = v // longer runs: RAFT_SIM_SEEDS=1000 go test -run RandomFaults
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		s := newSimNet(t, 5, seed, func(c *Config) { c.PreVote = seed%2 == 0; c.CheckQuorum = seed%3 != 0 })
		rng := rand.New(rand.NewPCG(seed, 99))
		s.drop = func(Message) bool { return rng.Float64() < 0.2 }
		if seed%4 == 1 {
			s.chaos = rand.New(rand.NewPCG(seed, 7))
		}
		// committedAt remembers the entry first applied at each index.
		committedAt := map[uint64]Entry{}
		check := func() {
			for _, id := range s.ids {
				for _, e := range s.applied[id] {
					if prev, ok := committedAt[e.Index]; ok {
						if prev.Term != e.Term || !bytes.Equal(prev.Data, e.Data) {
							t.Fatalf("seed %d: node %d applied %d/%d %q where another applied %d/%q", seed, id, e.Index, e.Term, e.Data, prev.Term, prev.Data)
						}
					} else {
						committedAt[e.Index] = e
					}
				}
			}
		}
		for i := range 400 {
			switch r := rng.IntN(100); {
			case r < 3:
				victim := s.ids[rng.IntN(len(s.ids))]
				if !s.down[victim] && len(s.down) < 2 {
					s.crash(victim)
				}
			case r < 8:
				for _, id := range s.ids {
					if s.down[id] {
						s.restart(id)
						break
					}
				}
			case r < 10:
				s.isolate(s.ids[rng.IntN(len(s.ids))])
			case r < 14:
				s.heal()
			}
			if lead := s.leader(); lead != None && i%2 == 0 {
				if _, err := s.cores[lead].Propose([]byte(fmt.Sprintf("s%d-%d", seed, i))); err == nil {
					s.flush()
				}
			}
			s.tick()
			check()
		}
		s.drop, s.chaos = nil, nil
		s.heal()
		for _, id := range s.ids {
			if s.down[id] {
				s.restart(id)
			}
		}
		lead := s.mustElect()
		s.propose(lead, "final")
		s.tickUntil(100, func() bool {
			for _, id := range s.ids {
				if !slices.Contains(s.commands(id), "final") {
					return false
				}
			}
			return true
		})
		check()
		base := s.commands(s.ids[0])
		for _, id := range s.ids {
			if got := s.commands(id); !slices.Equal(got, base) || !slices.Contains(got, "final") {
				t.Fatalf("seed %d: node %d applied %d commands, node 1 %d (final present: %t)", seed, id, len(got), len(base), slices.Contains(got, "final"))
			}
		}
	}
}
