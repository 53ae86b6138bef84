// Package transporttest checks that an implementation of raft.Transport
// keeps the contract written on that interface, the way testing/fstest
// checks an fs.FS.
//
// Usage, in the implementation's own tests:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T, ids []raft.NodeID) transporttest.Cluster {
//			return newMyCluster(t, ids) // one transport per id, all able to reach each other
//		})
//	}
//
// Run builds a fresh Cluster for every case. Each case is a subtest named
// after the contract it checks; every violation found is reported with the
// contract it breaks. After each case, with every transport closed, Run
// checks that no goroutine started during the case is still running
// (go.uber.org/goleak). Run the suite under -race to check concurrency
// safety too.
//
// A peer "going down" is modelled by closing its transport, and "coming
// back" by asking the Cluster for a new transport for the same node, which
// must be reachable at the same address. Clusters that can also cut a node
// off without closing it implement Outages; clusters whose transports keep
// per-peer order implement Ordered. Those extra cases run only then.
package transporttest

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"go.uber.org/goleak"
)

// Cluster is a set of transports under test, one per node, able to reach
// each other.
type Cluster interface {
	// Peers returns the members with the addresses their transports are
	// reachable at; the suite passes it to every transport's SetPeers.
	Peers() []raft.Server
	// Transport returns a new, unstarted transport for node id. The suite
	// calls it once per node when a case begins and again after it closed
	// that node's transport, to model the node restarting: the new
	// transport must be reachable at the same address.
	Transport(id raft.NodeID) raft.Transport
}

// Factory builds a Cluster for nodes ids. It may use t for t.Cleanup
// (cleanups run after the case has closed every transport) and t.Fatal.
type Factory func(t *testing.T, ids []raft.NodeID) Cluster

// Ordered is an optional capability of a Cluster. PreservesOrder reports
// whether its transports deliver the messages one node sends to another in
// the order they were sent (some may be missing, none repeated) as long as
// neither transport is restarted.
type Ordered interface {
	PreservesOrder() bool
}

// Outages is an optional capability of a Cluster: Down makes node id
// unreachable, in both directions, without closing its transport (a
// network failure or hung host); Up makes it reachable again.
type Outages interface {
	Down(id raft.NodeID)
	Up(id raft.NodeID)
}

// Run checks the clusters made by newCluster against the raft.Transport
// contract, one subtest per case.
func Run(t *testing.T, newCluster Factory) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := runCase(t, tc, newCluster, defaultWait)
			if res.skipped != "" {
				t.Skip(res.skipped)
			}
			for _, f := range res.failures {
				t.Errorf("%s\n\tcontract: %s", f, tc.contract)
			}
		})
	}
}

// defaultWait bounds how long the suite waits for a message that should
// arrive over a healthy network (with resends). It only limits how long a
// broken transport takes to fail; a working one is much faster.
const defaultWait = 20 * time.Second

// testCase is one contract and the code that checks it.
type testCase struct {
	name     string
	contract string // one sentence: what the Transport must do
	nodes    int
	check    func(c *checker)
}

// caseResult is what one case found.
type caseResult struct {
	failures []string
	skipped  string
}

// errFatal unwinds a case after a failure it cannot continue from;
// errSkip unwinds a case whose capability is missing.
type (
	errFatal struct{}
	errSkip  struct{ why string }
)

// checker runs one case against one cluster and collects its failures.
// Goroutines started by cases report through errorf, which is safe for
// concurrent use.
type checker struct {
	t       *testing.T
	cluster Cluster
	wait    time.Duration
	nodes   map[raft.NodeID]*node
	ids     []raft.NodeID

	mu       sync.Mutex
	failures []string
}

// runCase runs tc on a fresh cluster, turning panics of the implementation
// into failures, then closes every transport and checks for leaks.
func runCase(t *testing.T, tc testCase, newCluster Factory, wait time.Duration) caseResult {
	c := &checker{t: t, wait: wait, nodes: make(map[raft.NodeID]*node)}
	for i := 1; i <= tc.nodes; i++ {
		c.ids = append(c.ids, raft.NodeID(i))
	}
	before := goleak.IgnoreCurrent()
	var skipped string
	func() {
		defer func() {
			if r := recover(); r != nil {
				switch r := r.(type) {
				case errFatal:
				case errSkip:
					skipped = r.why
				default:
					c.errorf("panic: %v\n%s", r, trimStack(debug.Stack()))
				}
			}
		}()
		c.cluster = newCluster(t, c.ids)
		if c.cluster == nil {
			c.fatalf("the factory returned a nil Cluster")
		}
		tc.check(c)
	}()
	c.closeAll()
	if err := goleak.Find(before); err != nil {
		c.errorf("goroutines still running after every transport was closed:\n%v", err)
	}
	return caseResult{failures: c.failures, skipped: skipped}
}

func trimStack(s []byte) string {
	lines := strings.Split(string(s), "\n")
	if len(lines) > 24 {
		lines = lines[:24]
	}
	return strings.Join(lines, "\n")
}

// errorf records a failure and lets the case continue.
func (c *checker) errorf(format string, args ...any) {
	c.mu.Lock()
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// fatalf records a failure and ends the case.
func (c *checker) fatalf(format string, args ...any) {
	c.errorf(format, args...)
	panic(errFatal{})
}

// skip ends the case without failure.
func (c *checker) skip(why string) { panic(errSkip{why}) }
