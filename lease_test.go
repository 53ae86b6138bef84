package raft

import "testing"

func leaseConfig(c *Config) { c.LeaseRead, c.CheckQuorum = true, true }

// readServedNow asks lead for a read index and reports whether the answer
// came in the very next Ready, without any heartbeat round.
func readServedNow(s *simNet, lead NodeID, ctx uint64) (served, heartbeats bool) {
	c := s.cores[lead]
	if err := c.ReadIndex(ctx); err != nil {
		return false, false
	}
	rd := c.Ready()
	for _, r := range rd.ReadStates {
		if r.Context == ctx && r.Index > 0 {
			served = true
		}
	}
	for _, m := range rd.Messages {
		if m.Type == MsgHeartbeat {
			heartbeats = true
		}
	}
	s.queue = append(s.queue, rd.Messages...)
	s.applied[lead] = append(s.applied[lead], rd.CommittedEntries...)
	s.reads[lead] = append(s.reads[lead], rd.ReadStates...)
	c.Advance(rd)
	s.flush()
	return served, heartbeats
}

func TestCoreLeaseReadSkipsHeartbeatRound(t *testing.T) {
	for _, lease := range []bool{true, false} {
		s := newSimNet(t, 3, 11, func(c *Config) {
			c.CheckQuorum = true
			c.LeaseRead = lease
		})
		lead := s.mustElect()
		s.propose(lead, "x")
		for range 3 {
			s.tick() // a heartbeat round acknowledged by everyone
		}
		served, hb := readServedNow(s, lead, 7)
		if served != lease || hb == lease {
			t.Fatalf("lease=%t: read served at once=%t, heartbeat round sent=%t", lease, served, hb)
		}
	}
}

// TestCoreLeaseExpiresBeforeAnotherLeaderExists isolates a leader holding a
// lease and checks the property leases rely on: the last lease read it
// serves happens before the majority side can elect a new leader.
func TestCoreLeaseExpiresBeforeAnotherLeaderExists(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		s := newSimNet(t, 3, seed, leaseConfig)
		lead := s.mustElect()
		s.propose(lead, "x")
		for range 3 {
			s.tick()
		}
		s.isolate(lead)
		lastServed, newLeader := -1, -1
		for tick := 0; tick < 20*s.cfgs[lead].ElectionTicks && newLeader < 0; tick++ {
			if s.cores[lead].Role() == Leader {
				if served, _ := readServedNow(s, lead, uint64(1000+tick)); served {
					lastServed = tick
				}
			}
			s.tick()
			for _, id := range s.ids {
				if id != lead && s.cores[id].Role() == Leader {
					newLeader = tick
				}
			}
		}
		if lastServed < 0 {
			t.Fatalf("seed %d: the isolated leader never served a lease read", seed)
		}
		if newLeader < 0 {
			t.Fatalf("seed %d: the majority never elected a new leader", seed)
		}
		if lastServed >= newLeader {
			t.Fatalf("seed %d: stale leader served a lease read at tick %d, new leader elected at tick %d", seed, lastServed, newLeader)
		}
	}
}

func TestLeaseReadRequiresCheckQuorum(t *testing.T) {
	cfg := testConfig(1)
	cfg.LeaseRead, cfg.CheckQuorum = true, false
	if err := cfg.Validate(); err == nil {
		t.Fatal("LeaseRead without CheckQuorum was accepted")
	}
}
