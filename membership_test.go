package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// startJoiner starts node id with an empty storage and no Peers: it waits
// for a leader to add it.
func (c *testCluster) startJoiner(id NodeID) *Node {
	c.t.Helper()
	cfg := c.cfg
	cfg.ID = id
	cfg.Peers = nil
	sm := &counterSM{}
	c.stores[id] = NewMemoryStorage()
	nd, err := NewNode(cfg, sm, c.stores[id], c.net.Transport(id))
	if err != nil {
		c.t.Fatalf("start joiner %d: %v", id, err)
	}
	c.nodes[id], c.sms[id] = nd, sm
	return nd
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// changeOnLeader retries a membership change on whichever node leads.
func (c *testCluster) changeOnLeader(t *testing.T, f func(n *Node) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		lead := c.waitLeader(10 * time.Second)
		if err = f(c.nodes[lead]); err == nil {
			return
		}
		var nl *NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("membership change: %v", err)
		}
	}
	t.Fatalf("membership change did not succeed: %v", err)
}

func voters(n *Node) []NodeID { return n.Status().Config.Voters() }

func TestGrowAndShrinkClusterWhileWriting(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.waitLeader(5 * time.Second)
	// A client writes continuously while the membership changes; every
	// write it saw acknowledged must survive on every final member.
	var mu sync.Mutex
	var acked []string
	live := []*Node{c.nodes[1]} // the writer's view of the members; guarded by mu
	setLive := func() {
		mu.Lock()
		defer mu.Unlock()
		live = live[:0]
		for _, nd := range c.nodes {
			live = append(live, nd)
		}
	}
	leader := func() *Node {
		mu.Lock()
		defer mu.Unlock()
		for _, nd := range live {
			if nd.Leader() == nd.ID() {
				return nd
			}
		}
		return nil
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			lead := leader()
			if lead == nil {
				time.Sleep(time.Millisecond)
				continue
			}
			cmd := fmt.Sprintf("w%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := lead.Propose(ctx, []byte(cmd))
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, cmd)
				mu.Unlock()
			}
		}
	}()
	for id := NodeID(2); id <= 5; id++ {
		c.startJoiner(id)
		setLive()
		c.changeOnLeader(t, func(n *Node) error { return n.AddVoter(ctxTimeout(t, 5*time.Second), id, "") })
		lead := c.waitLeader(5 * time.Second)
		if got := len(voters(c.nodes[lead])); got != int(id) {
			t.Fatalf("after adding %d: %d voters, want %d", id, got, id)
		}
	}
	// Shrink to 3, removing the leader first.
	for len(c.nodes) > 3 {
		lead := c.waitLeader(5 * time.Second)
		c.changeOnLeader(t, func(n *Node) error { return n.RemoveServer(ctxTimeout(t, 5*time.Second), lead) })
		mu.Lock()
		live = slices.DeleteFunc(live, func(nd *Node) bool { return nd.ID() == lead })
		mu.Unlock()
		c.stop(lead)
		lead = c.waitLeader(5 * time.Second)
		if got := len(voters(c.nodes[lead])); got != len(c.nodes) {
			t.Fatalf("after removing a node: %d voters, want %d", got, len(c.nodes))
		}
	}
	c.mustPropose("last")
	close(stop)
	<-writerDone
	lead := c.waitLeader(5 * time.Second)
	got := c.waitSameState(t, lead, 10*time.Second)
	have := make(map[string]bool, len(got))
	for _, cmd := range got {
		if have[cmd] {
			t.Fatalf("command %s applied twice", cmd)
		}
		have[cmd] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged during the changes", len(acked))
	}
	for _, cmd := range acked {
		if !have[cmd] {
			t.Fatalf("acknowledged write %s lost", cmd)
		}
	}
}

func TestConfChangeWhilePendingIsRefused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(5 * time.Second)
	c.mustPropose("x")
	// Cut the leader off so its change cannot commit, then try another.
	c.net.Isolate(lead)
	var idx uint64
	var err1, err2 error
	if err := c.nodes[lead].do(context.Background(), func() {
		idx, err1 = c.nodes[lead].core.ProposeConfChange(ConfChange{Type: AddLearner, ID: 9})
		_, err2 = c.nodes[lead].core.ProposeConfChange(ConfChange{Type: AddLearner, ID: 10})
	}); err != nil {
		t.Fatal(err)
	}
	if err1 != nil || idx == 0 {
		t.Fatalf("first change: idx %d err %v", idx, err1)
	}
	if !errors.Is(err2, ErrConfChangePending) {
		t.Fatalf("second change: got %v, want ErrConfChangePending", err2)
	}
}

func TestRemovedNodeRestartDoesNotDisrupt(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(5 * time.Second)
	victim := NodeID(1)
	if victim == lead {
		victim = 2
	}
	c.mustPropose("a")
	// Stop the victim first so it never learns of its removal.
	c.stop(victim)
	c.changeOnLeader(t, func(n *Node) error { return n.RemoveServer(ctxTimeout(t, 5*time.Second), victim) })
	lead = c.waitLeader(5 * time.Second)
	term := c.nodes[lead].Status().Term
	c.start(victim) // restarts from its old storage, still thinks it is a member
	for i := range 20 {
		c.mustPropose(fmt.Sprintf("b%d", i))
	}
	// Let the removed node time out a few times.
	deadline := time.Now().Add(time.Duration(5*c.cfg.ElectionTicks*2) * c.cfg.TickInterval)
	for time.Now().Before(deadline) {
		c.mustPropose("tick")
	}
	s := c.nodes[lead].Status()
	if s.Role != Leader || s.Term != term {
		t.Fatalf("leader %d disrupted by removed node: role %v term %d (was %d)", lead, s.Role, s.Term, term)
	}
}

func TestReplaceEveryMemberUnderLoss(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.net.SetFaults(LinkFaults{Drop: 0.10})
	c.waitLeader(10 * time.Second)
	var want []string
	write := func() {
		cmd := fmt.Sprintf("r%d", len(want))
		c.mustPropose(cmd)
		want = append(want, cmd)
	}
	write()
	for old := NodeID(1); old <= 3; old++ {
		fresh := old + 10
		c.startJoiner(fresh)
		c.changeOnLeader(t, func(n *Node) error { return n.AddVoter(ctxTimeout(t, 10*time.Second), fresh, "") })
		write()
		c.changeOnLeader(t, func(n *Node) error { return n.RemoveServer(ctxTimeout(t, 10*time.Second), old) })
		c.stop(old)
		write()
	}
	lead := c.waitLeader(10 * time.Second)
	got := voters(c.nodes[lead])
	if fmt.Sprint(got) != fmt.Sprint([]NodeID{11, 12, 13}) {
		t.Fatalf("voters after replacing every member: %v, want [11 12 13]", got)
	}
	c.waitApplied(want, 20*time.Second)
}

func TestTransferLeadershipToEachFollowerUnderLoad(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitLeader(5 * time.Second)
	stop := make(chan struct{})
	done := make(chan int)
	go func() { // continuous writers; failures during handoff are expected
		ok := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- ok
				return
			default:
			}
			if lead := c.leaderNow(); lead != None {
				if _, err := c.propose(lead, fmt.Sprintf("load%d", i)); err == nil {
					ok++
				}
			}
		}
	}()
	for round := 0; round < 2; round++ {
		for target := NodeID(1); target <= 3; target++ {
			lead := c.waitLeader(10 * time.Second)
			if lead == target {
				continue
			}
			if err := c.nodes[lead].TransferLeadership(ctxTimeout(t, 10*time.Second), target); err != nil {
				t.Fatalf("transfer %d -> %d: %v", lead, target, err)
			}
			if got := c.waitLeader(10 * time.Second); got != target {
				t.Fatalf("after transfer to %d the leader is %d", target, got)
			}
		}
	}
	close(stop)
	if ok := <-done; ok == 0 {
		t.Fatal("no write succeeded during the transfers")
	}
	lead := c.waitLeader(5 * time.Second)
	c.waitSameState(t, lead, 10*time.Second)
}

func TestTransferLeadershipToUnreachableTargetFails(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(5 * time.Second)
	target := lead%3 + 1
	c.net.Disconnect(target)
	err := c.nodes[lead].TransferLeadership(ctxTimeout(t, 10*time.Second), target)
	var te *TransferError
	if !errors.As(err, &te) {
		t.Fatalf("transfer to a disconnected node: %v, want *TransferError", err)
	}
	// The old leader keeps (or regains) leadership and serves writes.
	c.net.Reconnect(target)
	c.mustPropose("after")
}

func TestLearnerReceivesLogAndIsPromoted(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitLeader(5 * time.Second)
	c.mustPropose("before")
	c.startJoiner(4)
	c.changeOnLeader(t, func(n *Node) error { return n.AddLearner(ctxTimeout(t, 5*time.Second), 4, "addr-4") })
	c.mustPropose("after")
	c.waitApplied([]string{"before", "after"}, 10*time.Second)
	lead := c.waitLeader(5 * time.Second)
	s, ok := c.nodes[lead].Status().Config.Server(4)
	if !ok || s.Suffrage != Learner || s.Addr != "addr-4" {
		t.Fatalf("server 4 in config: %+v %t, want a learner at addr-4", s, ok)
	}
	// A learner never campaigns, even when it stops hearing the leader.
	c.net.Isolate(4)
	deadline := time.Now().Add(time.Duration(6*c.cfg.ElectionTicks) * c.cfg.TickInterval)
	for time.Now().Before(deadline) {
		if r := c.nodes[4].Status().Role; r != Follower {
			t.Fatalf("isolated learner became %v", r)
		}
		time.Sleep(time.Millisecond)
	}
	c.net.Heal()
	c.changeOnLeader(t, func(n *Node) error { return n.AddVoter(ctxTimeout(t, 5*time.Second), 4, "") })
	lead = c.waitLeader(5 * time.Second)
	if s, _ := c.nodes[lead].Status().Config.Server(4); s.Suffrage != Voter || s.Addr != "addr-4" {
		t.Fatalf("after promotion server 4 is %+v, want a voter keeping addr-4", s)
	}
}
