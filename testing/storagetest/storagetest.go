// Package storagetest checks that an implementation of raft.Storage keeps
// the contract written on that interface, the way testing/fstest checks an
// fs.FS.
//
// Usage, in the implementation's own tests:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) raft.Storage {
//			return mystorage.New(t.TempDir())
//		})
//	}
//
// Run calls newStorage once per case for a fresh, empty storage. Each case
// is a subtest named after the contract it checks; every violation found is
// reported, with the contract it breaks, rather than stopping at the first.
//
// Durable implementations should also implement Reopener: every case then
// reopens the storage at the points where acknowledged state must survive a
// restart, and checks it did.
package storagetest

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/raftgo/raft"
)

// Reopener is an optional capability of the storage returned by
// newStorage. Reopen closes the storage (releasing any lock) and returns a
// new Storage over the same durable state, as a process restarting would
// see it. The suite never uses the old value afterwards. When the storage
// returned by Reopen implements Reopener too, it may be reopened again.
type Reopener interface {
	Reopen() (raft.Storage, error)
}

// Run checks the storages made by newStorage against the raft.Storage
// contract, one subtest per case. newStorage must return a new, empty
// storage each time; it may use t for t.TempDir and t.Cleanup. If the
// storage (or the one last returned by Reopen) implements io.Closer, Run
// closes it when the case ends.
func Run(t *testing.T, newStorage func(t *testing.T) raft.Storage) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := runCase(tc, func() raft.Storage { return newStorage(t) })
			for _, f := range res.failures {
				t.Errorf("%s\n\tcontract: %s", f, tc.contract)
			}
		})
	}
}

// testCase is one contract and the code that checks it.
type testCase struct {
	name     string
	contract string // one sentence: what the Storage must do
	check    func(c *checker)
}

// caseResult is what one case found.
type caseResult struct {
	failures []string
}

// errFatal unwinds a case after a failure it cannot continue from.
type errFatal struct{}

// checker runs one case against one storage and collects its failures.
// Cases use it from their own goroutine; goroutines they start report
// through errorf, which is safe for concurrent use.
type checker struct {
	newStorage func() raft.Storage
	st         raft.Storage
	reopened   int

	mu       chan struct{} // 1-slot semaphore guarding failures
	failures []string
}

// runCase runs tc on a fresh storage, turning panics of the implementation
// into failures.
func runCase(tc testCase, newStorage func() raft.Storage) caseResult {
	c := &checker{newStorage: newStorage, mu: make(chan struct{}, 1)}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(errFatal); !ok {
					c.errorf("panic: %v\n%s", r, trimStack(debug.Stack()))
				}
			}
		}()
		c.st = newStorage()
		if c.st == nil {
			c.fatalf("newStorage returned nil")
		}
		tc.check(c)
	}()
	if cl, ok := c.st.(io.Closer); ok {
		if err := safeClose(cl); err != nil {
			c.errorf("Close: %v", err)
		}
	}
	return caseResult{failures: c.failures}
}

func safeClose(cl io.Closer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return cl.Close()
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
	c.mu <- struct{}{}
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
	<-c.mu
}

// fatalf records a failure and ends the case.
func (c *checker) fatalf(format string, args ...any) {
	c.errorf(format, args...)
	panic(errFatal{})
}

// canReopen reports whether the storage under test implements Reopener.
func (c *checker) canReopen() bool {
	_, ok := c.st.(Reopener)
	return ok
}

// restart reopens the storage if it supports it; otherwise it does nothing.
// Cases call it wherever acknowledged state must survive a restart.
func (c *checker) restart() {
	r, ok := c.st.(Reopener)
	if !ok {
		return
	}
	st, err := r.Reopen()
	if err != nil {
		c.st = nil
		c.fatalf("Reopen after %d reopens: %v", c.reopened, err)
	}
	if st == nil {
		c.st = nil
		c.fatalf("Reopen returned a nil Storage")
	}
	c.st = st
	c.reopened++
}

// where says whether the storage has been reopened, for failure messages.
func (c *checker) where() string {
	if c.reopened == 0 {
		return ""
	}
	return fmt.Sprintf(" (after %d reopens)", c.reopened)
}
