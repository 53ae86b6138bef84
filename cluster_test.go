package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Generous deadlines: these tests run on a loaded 2-core machine under the
// race detector. They poll; none waits for a fixed time.
const (
	electTimeout = 20 * time.Second
	applyTimeout = 20 * time.Second
)

func TestClusterElectsOneLeader(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := newTestCluster(t, n, nil)
			lead := c.waitLeader(electTimeout)
			s := c.nodes[lead].Status()
			if s.Role != Leader || s.Term < 2 {
				t.Fatalf("leader %d status %+v", lead, s)
			}
			leaders := 0
			for _, nd := range c.nodes {
				if st := nd.Status(); st.Role == Leader && st.Term == s.Term {
					leaders++
				}
			}
			if leaders != 1 {
				t.Fatalf("%d leaders in term %d", leaders, s.Term)
			}
			// The leader reports every follower's progress.
			if len(s.Progress) != n {
				t.Fatalf("leader reports progress of %d members, want %d", len(s.Progress), n)
			}
			// Cleanup checks, from every observed role change, that no
			// term ever had two leaders.
		})
	}
}

func TestClusterReelectionAfterLeaderStopped(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := newTestCluster(t, n, nil)
			lead := c.waitLeader(electTimeout)
			term := c.nodes[lead].Status().Term
			c.mustPropose("before")
			c.stop(lead)
			nl := c.waitLeader(electTimeout)
			if nl == lead {
				t.Fatalf("stopped node %d still leader", lead)
			}
			if nt := c.nodes[nl].Status().Term; nt <= term {
				t.Fatalf("new leader's term %d not above old term %d", nt, term)
			}
			c.mustPropose("after")
			c.waitApplied([]string{"before", "after"}, applyTimeout)
		})
	}
}

func TestClusterReelectionAfterLeaderPartitioned(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	old := c.waitLeader(electTimeout)
	term := c.nodes[old].Status().Term
	c.mustPropose("before")
	c.net.Isolate(old)
	nl := c.waitLeaderAmong(electTimeout, c.followers(old)...)
	if nt := c.nodes[nl].Status().Term; nt <= term {
		t.Fatalf("new leader term %d not above %d", nt, term)
	}
	// With check-quorum the isolated leader notices it lost its majority.
	waitFor(t, electTimeout, "the isolated leader to step down", func() bool { return c.nodes[old].Status().Role != Leader })
	if _, err := c.propose(nl, "during"); err != nil {
		t.Fatalf("majority side cannot commit: %v", err)
	}
	c.net.Heal()
	c.mustPropose("after")
	c.waitApplied([]string{"before", "during", "after"}, applyTimeout)
}

// TestClusterAppliesSameOrderEverywhere runs concurrent proposers and checks
// every node applies the same commands in the same order, each exactly once,
// and that each Propose returned the result of its own entry.
func TestClusterAppliesSameOrderEverywhere(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	const workers, each = 8, 25
	var (
		mu      sync.Mutex
		results = map[string]uint64{}
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				cmd := fmt.Sprintf("w%d-%d", w, i)
				deadline := time.Now().Add(applyTimeout)
				for time.Now().Before(deadline) {
					lead := c.currentLeader()
					if lead == None {
						time.Sleep(time.Millisecond)
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					v, err := c.nodes[lead].Propose(ctx, []byte(cmd))
					cancel()
					if err == nil {
						mu.Lock()
						results[cmd] = v.(uint64)
						mu.Unlock()
						break
					}
					var nl *NotLeaderError
					if !errors.As(err, &nl) {
						// Outcome unknown: do not retry, the command may
						// be applied anyway.
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	var want []string
	waitFor(t, applyTimeout, "every node to apply the same commands", func() bool {
		base := c.sms[1].commands()
		for id := range c.nodes {
			if !slices.Equal(c.sms[id].commands(), base) {
				return false
			}
		}
		for cmd := range results {
			if !slices.Contains(base, cmd) {
				return false
			}
		}
		want = base
		return true
	})
	seen := map[string]bool{}
	for _, cmd := range want {
		if seen[cmd] {
			t.Fatalf("command %q applied twice", cmd)
		}
		seen[cmd] = true
	}
	// Per worker, commands are applied in the order they were proposed.
	for w := range workers {
		last := -1
		for pos, cmd := range want {
			var ww, i int
			fmt.Sscanf(cmd, "w%d-%d", &ww, &i)
			if ww == w {
				if i <= last {
					t.Fatalf("worker %d: command %d applied after %d (position %d)", w, i, last, pos)
				}
				last = i
			}
		}
	}
	// The result is the index of the proposer's own entry: distinct and
	// in the same relative order as the applied commands.
	idx := map[uint64]string{}
	for cmd, v := range results {
		if other, dup := idx[v]; dup {
			t.Fatalf("commands %q and %q both got result %d", cmd, other, v)
		}
		idx[v] = cmd
	}
	var byIndex []string
	for _, v := range slices.Sorted(mapsKeys(idx)) {
		byIndex = append(byIndex, idx[v])
	}
	var appliedAcked []string
	for _, cmd := range want {
		if _, ok := results[cmd]; ok {
			appliedAcked = append(appliedAcked, cmd)
		}
	}
	if !slices.Equal(byIndex, appliedAcked) {
		t.Fatalf("results do not follow apply order")
	}
	if len(results) < workers*each/2 {
		t.Fatalf("only %d of %d proposals acknowledged", len(results), workers*each)
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestClusterProgressWithMinorityDown(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	lead := c.waitLeader(electTimeout)
	c.mustPropose("a")
	for _, id := range c.followers(lead)[:2] {
		c.stop(id)
	}
	c.mustPropose("b")
	c.mustPropose("c")
	c.waitApplied([]string{"a", "b", "c"}, applyTimeout)
}

// TestClusterNoCommitWithMajorityDown stops both followers of a 3-node
// cluster: a proposal stays uncommitted however long the leader keeps
// sending, and commits as soon as one follower returns.
func TestClusterNoCommitWithMajorityDown(t *testing.T) {
	// Without check-quorum the leader keeps leading, so the very same
	// proposal can commit when the majority returns.
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.CheckQuorum = false })
	lead := c.waitLeader(electTimeout)
	c.mustPropose("a")
	c.waitApplied([]string{"a"}, applyTimeout)
	down := c.followers(lead)
	for _, id := range down {
		c.stop(id)
	}
	commit := c.nodes[lead].Status().Commit
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := c.nodes[lead].Propose(context.Background(), []byte("b"))
		done <- result{v, err}
	}()
	waitFor(t, applyTimeout, "the proposal to reach the leader's log", func() bool {
		return c.nodes[lead].Status().LastIndex > commit
	})
	// Let the leader try for a while: wait for 60 more messages (30
	// heartbeat rounds, several election timeouts), counted, not timed.
	sent := c.net.Stats().Sent
	waitFor(t, applyTimeout, "the leader to keep sending", func() bool { return c.net.Stats().Sent >= sent+60 })
	if s := c.nodes[lead].Status(); s.Commit != commit || s.Role != Leader {
		t.Fatalf("commit moved from %d to %d (role %v) with a majority down", commit, s.Commit, s.Role)
	}
	select {
	case r := <-done:
		t.Fatalf("proposal returned with a majority down: %v, %v", r.v, r.err)
	default:
	}
	c.start(down[0])
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("proposal failed once the majority returned: %v", r.err)
		}
	case <-time.After(applyTimeout):
		t.Fatal("proposal did not commit once the majority returned")
	}
	if got := c.sms[lead].commands(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("leader applied %v", got)
	}
}

// TestClusterProgressWithMessageLoss drops 30% of all messages and still
// commits proposals, then converges once the network is clean.
func TestClusterProgressWithMessageLoss(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitLeader(electTimeout)
	c.net.SetFaults(LinkFaults{Drop: 0.3})
	acked := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; len(acked) < 20; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d commands committed at 30%% loss", len(acked))
		}
		cmd := fmt.Sprintf("c%d", i)
		for _, nd := range c.nodes {
			if nd.Status().Role != Leader {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := nd.Propose(ctx, []byte(cmd)); err == nil {
				acked[cmd] = true
			}
			cancel()
			break
		}
	}
	if st := c.net.Stats(); st.Dropped == 0 {
		t.Fatal("the network dropped nothing")
	}
	c.net.SetFaults(LinkFaults{})
	c.mustPropose("final")
	waitFor(t, applyTimeout, "all nodes to converge", func() bool {
		base := c.sms[1].commands()
		if !slices.Contains(base, "final") {
			return false
		}
		for id := range c.nodes {
			if !slices.Equal(c.sms[id].commands(), base) {
				return false
			}
		}
		return true
	})
	applied := c.sms[1].commands()
	for cmd := range acked {
		if !slices.Contains(applied, cmd) {
			t.Fatalf("acknowledged command %q was lost", cmd)
		}
	}
}

// TestClusterRestartKeepsTermVoteAndLog stops a follower, restarts it from
// its MemoryStorage while cut off from the others (so nothing can change
// its state), and checks term, vote and log came back; then restarts the
// whole cluster.
func TestClusterRestartKeepsTermVoteAndLog(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(electTimeout)
	for _, cmd := range []string{"a", "b", "c"} {
		c.mustPropose(cmd)
	}
	c.waitApplied([]string{"a", "b", "c"}, applyTimeout)
	f := c.followers(lead)[0]
	before := c.nodes[f].Status()
	c.stop(f)
	st, _ := c.stores[f].Load()
	if st.HardState.Term != before.Term || st.HardState.Vote != before.Vote || uint64(len(st.Entries)) != before.LastIndex {
		t.Fatalf("storage holds %+v (%d entries); node had term %d vote %d last %d", st.HardState, len(st.Entries), before.Term, before.Vote, before.LastIndex)
	}

	c.net.Disconnect(f)
	nd := c.start(f)
	s := nd.Status()
	// Pre-vote (on by default) keeps an isolated node from bumping its term.
	// The stored commit index is only a hint that may lag (it is written
	// with the next durable batch), so it is not compared.
	if s.Term != before.Term || s.Vote != before.Vote || s.LastIndex != before.LastIndex || s.Commit > before.LastIndex {
		t.Fatalf("after restart: term %d vote %d last %d commit %d; before: term %d vote %d last %d commit %d",
			s.Term, s.Vote, s.LastIndex, s.Commit, before.Term, before.Vote, before.LastIndex, before.Commit)
	}
	c.net.Reconnect(f)
	waitFor(t, applyTimeout, "the restarted node to re-apply its committed log", func() bool {
		return slices.Equal(c.sms[f].commands(), []string{"a", "b", "c"})
	})
	c.mustPropose("d")
	c.waitApplied([]string{"a", "b", "c", "d"}, applyTimeout)

	// Whole-cluster restart.
	terms := map[NodeID]uint64{}
	for _, p := range c.peers {
		terms[p.ID] = c.nodes[p.ID].Status().Term
		c.stop(p.ID)
	}
	for _, p := range c.peers {
		c.start(p.ID)
		if got := c.nodes[p.ID].Status().Term; got < terms[p.ID] {
			t.Fatalf("node %d restarted in term %d, had %d", p.ID, got, terms[p.ID])
		}
	}
	c.waitApplied([]string{"a", "b", "c", "d"}, applyTimeout)
	c.mustPropose("e")
	c.waitApplied([]string{"a", "b", "c", "d", "e"}, applyTimeout)
}

func TestClusterProposeOnFollowerReturnsNotLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	deadline := time.Now().Add(electTimeout)
	for {
		lead := c.waitLeader(electTimeout)
		term := c.nodes[lead].Status().Term
		ok := true
		for _, f := range c.followers(lead) {
			_, err := c.propose(f, "x")
			var nl *NotLeaderError
			if !errors.As(err, &nl) {
				t.Fatalf("propose on follower %d: %v, want *NotLeaderError", f, err)
			}
			if nl.Leader != lead {
				ok = false // leadership moved under us; try again
			}
			if nl.Leader != None && nl.Error() == "" {
				t.Fatal("empty error text")
			}
		}
		if ok && c.nodes[lead].Status().Term == term {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("followers never named a stable leader")
		}
	}
	if got := c.sms[1].commands(); len(got) != 0 {
		t.Fatalf("a refused proposal was applied: %v", got)
	}
}

// TestNodeCallsAfterStopReturnErrStopped stops a node with a proposal and a
// read in flight and checks every public call reports ErrStopped and no
// goroutine is left.
func TestNodeCallsAfterStopReturnErrStopped(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.CheckQuorum = false })
	lead := c.waitLeader(electTimeout)
	for _, f := range c.followers(lead) {
		c.stop(f)
	}
	nd := c.nodes[lead]
	pending := make(chan error, 2)
	go func() { _, err := nd.Propose(context.Background(), []byte("stuck")); pending <- err }()
	go func() { pending <- nd.Read(context.Background()) }()
	waitFor(t, applyTimeout, "the proposal to be appended", func() bool {
		s := nd.Status()
		return s.LastIndex > s.Commit
	})
	if err := nd.Stop(); err != nil {
		t.Fatalf("first Stop: %v", err)
	}
	for range 2 {
		select {
		case err := <-pending:
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("in-flight call ended with %v, want ErrStopped", err)
			}
		case <-time.After(applyTimeout):
			t.Fatal("in-flight call did not return after Stop")
		}
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"Propose":            func() error { _, err := nd.Propose(ctx, []byte("x")); return err },
		"Read":               func() error { return nd.Read(ctx) },
		"Campaign":           func() error { return nd.Campaign(ctx) },
		"TransferLeadership": func() error { return nd.TransferLeadership(ctx, 2) },
		"Snapshot":           func() error { return nd.Snapshot(ctx) },
		"Stop":               nd.Stop,
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrStopped) {
			t.Errorf("%s after Stop: %v, want ErrStopped", name, err)
		}
	}
	if s := nd.Status(); !s.Stopped || s.ID != lead {
		t.Fatalf("Status after Stop: %+v", s)
	}
	select {
	case <-nd.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	delete(c.nodes, lead)
	c.stopAll()
}

// TestClusterReadReflectsPriorWrites checks Read on the leader and on every
// follower: once it returns, the local state machine holds every write
// acknowledged before the call.
func TestClusterReadReflectsPriorWrites(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	for i := range 5 {
		cmd := fmt.Sprintf("w%d", i)
		c.mustPropose(cmd)
		for _, p := range c.peers {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := c.nodes[p.ID].Read(ctx)
			cancel()
			var nl *NotLeaderError
			if errors.As(err, &nl) {
				continue // leadership moved between the write and the read
			}
			if err != nil {
				t.Fatalf("Read on %d: %v", p.ID, err)
			}
			if got := c.sms[p.ID].commands(); !slices.Contains(got, cmd) {
				t.Fatalf("node %d: Read returned but state lacks %q: %v", p.ID, cmd, got)
			}
		}
	}
}

// TestSingleNodeCluster: a one-voter cluster elects itself, commits alone
// and serves reads.
func TestSingleNodeCluster(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	if lead := c.waitLeader(electTimeout); lead != 1 {
		t.Fatalf("leader %d", lead)
	}
	v, err := c.propose(1, "solo")
	if err != nil {
		t.Fatal(err)
	}
	if idx, ok := v.(uint64); !ok || idx < 2 {
		t.Fatalf("result %v, want the entry's index (after the config and no-op entries)", v)
	}
	if err := c.nodes[1].Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.sms[1].commands(); !slices.Equal(got, []string{"solo"}) {
		t.Fatalf("applied %v", got)
	}
}

// A proposal that cannot commit (its leader is cut off, and check-quorum is
// off so it keeps leading) returns its context's error: for many proposers
// sharing one cancelled context and for a deadline of one's own. Propose
// does not select on ctx.Done(); the applier's canceller must find them.
func TestProposeReturnsWhenContextEndsWhileStuck(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.CheckQuorum = false })
	lead := c.waitLeader(10 * time.Second)
	c.mustPropose("before")
	for _, f := range c.followers(lead) {
		c.net.Isolate(f)
	}
	nd := c.nodes[lead]

	shared, cancel := context.WithCancel(context.Background())
	const proposers = 16
	errs := make(chan error, proposers)
	for i := range proposers {
		go func() {
			_, err := nd.Propose(shared, []byte(fmt.Sprintf("stuck-%d", i)))
			errs <- err
		}()
	}
	own := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := nd.Propose(ctx, []byte("own-deadline"))
		own <- err
	}()
	wait := func(errs chan error, want error, what string) {
		t.Helper()
		select {
		case err := <-errs:
			if !errors.Is(err, want) {
				t.Fatalf("Propose with %s on a cut-off leader: %v, want %v", what, err, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Propose with %s did not return when the context ended", what)
		}
	}
	wait(own, context.DeadlineExceeded, "a deadline")
	cancel()
	for range proposers {
		wait(errs, context.Canceled, "a cancelled shared context")
	}
	// Healed, the cluster carries on.
	c.net.Heal()
	c.mustPropose("after")
}

// TestClusterWithInlineDelivery runs the cluster tests that inject faults
// (loss, partitions, stopped and restarted nodes) with every node on a
// readerTransport, so that messages and proposals are handled on the
// goroutines that deliver them whenever the node is idle, and checks that
// they were.
func TestClusterWithInlineDelivery(t *testing.T) {
	inlineClusters = true
	defer func() { inlineClusters = false }()
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"ElectsOneLeader", TestClusterElectsOneLeader},
		{"ReelectionAfterLeaderStopped", TestClusterReelectionAfterLeaderStopped},
		{"ReelectionAfterLeaderPartitioned", TestClusterReelectionAfterLeaderPartitioned},
		{"AppliesSameOrderEverywhere", TestClusterAppliesSameOrderEverywhere},
		{"ProgressWithMinorityDown", TestClusterProgressWithMinorityDown},
		{"NoCommitWithMajorityDown", TestClusterNoCommitWithMajorityDown},
		{"ProgressWithMessageLoss", TestClusterProgressWithMessageLoss},
		{"RestartKeepsTermVoteAndLog", TestClusterRestartKeepsTermVoteAndLog},
		{"ProposeOnFollowerReturnsNotLeader", TestClusterProposeOnFollowerReturnsNotLeader},
		{"CallsAfterStopReturnErrStopped", TestNodeCallsAfterStopReturnErrStopped},
		{"ReadReflectsPriorWrites", TestClusterReadReflectsPriorWrites},
		{"SingleNode", TestSingleNodeCluster},
		{"LaggingFollowerCatchesUpViaSnapshot", TestLaggingFollowerCatchesUpViaSnapshot},
		{"SnapshotTransferUnderLossAndLeaderChange", TestSnapshotTransferUnderLossAndLeaderChange},
		{"RestartRestoresSnapshotAndReplaysOnlyTheTail", TestRestartRestoresSnapshotAndReplaysOnlyTheTail},
		{"GrowAndShrinkClusterWhileWriting", TestGrowAndShrinkClusterWhileWriting},
		{"ReplaceEveryMemberUnderLoss", TestReplaceEveryMemberUnderLoss},
		{"TransferLeadershipToEachFollowerUnderLoad", TestTransferLeadershipToEachFollowerUnderLoad},
		{"RemovedNodeRestartDoesNotDisrupt", TestRemovedNodeRestartDoesNotDisrupt},
	} {
		t.Run(tc.name, tc.test)
	}
	t.Run("HandledInline", func(t *testing.T) {
		c := newTestCluster(t, 3, nil)
		lead := c.waitLeader(electTimeout)
		for i := range 50 {
			c.mustPropose(fmt.Sprintf("c%d", i))
		}
		var steps, props uint64
		for _, nd := range c.nodes {
			steps += nd.inlineSteps.Load()
			props += nd.inlineProposals.Load()
		}
		if steps == 0 || props == 0 {
			t.Fatalf("%d messages and %d proposals handled inline, want some of each", steps, props)
		}
		if n := c.nodes[lead].inlineSteps.Load(); n == 0 {
			t.Fatal("the leader handled no acknowledgement inline")
		}
		// The goroutine that steps the acknowledgement committing a lone
		// proposal applies it too, while the applier is idle.
		if n := c.nodes[lead].app.inlineApplies.Load(); n == 0 {
			t.Fatal("the leader applied nothing on the goroutine that committed it")
		}
		// A follower refuses proposals on its loop: callers retrying at
		// once must not contend with the loop for the Core.
		f := c.followers(lead)[0]
		before := c.nodes[f].inlineProposals.Load()
		for range 20 {
			if _, err := c.nodes[f].Propose(context.Background(), []byte("x")); !isNotLeader(err) {
				t.Fatalf("Propose on follower %d: %v, want a NotLeaderError", f, err)
			}
		}
		if n := c.nodes[f].inlineProposals.Load() - before; n != 0 {
			t.Fatalf("follower handled %d proposals inline, want none", n)
		}
	})
}

// TestInlineApplyTakesTurnsWithTheApplier has concurrent proposers commit
// entries that are applied partly on the goroutines stepping the
// acknowledgements and partly on the apply goroutine, with snapshots taken
// and, on a follower that fell behind, restored along the way. Every
// replica must apply the same commands in the same order, and no state
// machine call may overlap another (the cluster's cleanup checks
// counterSM's record of that).
func TestInlineApplyTakesTurnsWithTheApplier(t *testing.T) {
	inlineClusters = true
	defer func() { inlineClusters = false }()
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SnapshotThreshold = 64; cfg.TrailingEntries = 16 })
	lead := c.waitLeader(electTimeout)
	const proposers, each = 8, 30
	proposeAll := func(phase int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, proposers)
		for p := range proposers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if _, err := c.nodes[lead].Propose(context.Background(), []byte(fmt.Sprintf("%d-p%d-%d", phase, p, i))); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// One follower falls behind until the leader has compacted past its
	// log, so that it catches up by a snapshot while entries keep
	// committing.
	lagging := c.followers(lead)[0]
	c.net.Isolate(lagging)
	proposeAll(1)
	behind := c.nodes[lagging].Status().LastIndex
	waitFor(t, 10*time.Second, "the leader to compact past the isolated follower's log", func() bool {
		st, err := c.stores[lead].Load()
		return err == nil && st.CompactedIndex > behind
	})
	c.net.Heal()
	proposeAll(2)
	want := c.sms[lead].commands()
	if len(want) != 2*proposers*each {
		t.Fatalf("leader applied %d commands, want %d", len(want), 2*proposers*each)
	}
	c.waitApplied(want, 10*time.Second)
	if n := c.nodes[lead].app.inlineApplies.Load(); n == 0 {
		t.Fatal("the leader applied nothing on a goroutine that committed it")
	}
	if c.sms[lagging].restores.Load() == 0 {
		t.Fatal("the lagging follower caught up without restoring a snapshot")
	}
}

// TestSlowStateMachineIsAppliedOnItsOwnGoroutine: once Apply is seen to be
// slow, a goroutine that commits entries leaves them to the apply
// goroutine instead of blocking on the state machine (a transport's
// reader would stop reading meanwhile).
func TestSlowStateMachineIsAppliedOnItsOwnGoroutine(t *testing.T) {
	inlineClusters = true
	defer func() { inlineClusters = false }()
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(electTimeout)
	// A lone proposal is committed by the goroutine stepping an
	// acknowledgement, unless the loop happens to take that message.
	for i := 0; c.nodes[lead].app.inlineApplies.Load() == 0; i++ {
		if i == 50 {
			t.Fatal("a quick state machine was not applied inline in 50 proposals")
		}
		c.mustPropose(fmt.Sprintf("fast%d", i))
	}
	c.sms[lead].applyDelay.Store(int64(time.Millisecond))
	before := c.nodes[lead].app.inlineApplies.Load()
	for i := range 20 {
		c.mustPropose(fmt.Sprintf("slow%d", i))
	}
	// The first slow Apply may run inline: nothing has shown it slow yet.
	if n := c.nodes[lead].app.inlineApplies.Load() - before; n > 1 {
		t.Fatalf("%d batches of a slow state machine applied inline, want at most 1", n)
	}
}

// TestSnapshotComesDueDuringInlineApplies: when entries applied off the
// apply goroutine bring a snapshot due, the apply goroutine is woken to
// take it.
func TestSnapshotComesDueDuringInlineApplies(t *testing.T) {
	inlineClusters = true
	defer func() { inlineClusters = false }()
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SnapshotThreshold = 16 })
	lead := c.waitLeader(electTimeout)
	for i := range 40 {
		c.mustPropose(fmt.Sprintf("c%d", i))
	}
	if c.nodes[lead].app.inlineApplies.Load() == 0 {
		t.Fatal("nothing was applied inline")
	}
	waitFor(t, 5*time.Second, "the leader to take a snapshot", func() bool {
		st, err := c.stores[lead].Load()
		return err == nil && st.Snapshot.Index >= 16
	})
}
