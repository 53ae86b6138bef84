package rafttest

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/raftgo/raft"
)

// TestCheckStateMachineAcceptsKV runs the user-facing check on a correct
// key-value state machine, with reads.
func TestCheckStateMachineAcceptsKV(t *testing.T) {
	CheckStateMachine(t, newKV, CheckOptions{Commands: kvCommand, Query: kvQuery, Read: kvRead, Seeds: 6})
}

// recordingTB captures what CheckStateMachine reports instead of failing
// the test.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// nondetSM returns a result that depends on the replica, not the log.
type nondetSM struct {
	kvSM
	calls *int
}

func (s *nondetSM) Apply(e raft.Entry) any {
	s.kvSM.Apply(e)
	*s.calls++
	return *s.calls
}

// unorderedSM writes its snapshot in map order: the same state gives
// different bytes.
type unorderedSM struct{ kvSM }

func (s *unorderedSM) Snapshot() (raft.Snapshot, error) {
	var b []byte
	for k, v := range s.m {
		b = fmt.Appendf(b, "%s=%s;", k, v)
	}
	return byteSnapshot(b), nil
}

func (s *unorderedSM) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m = map[string]string{}
	for _, kv := range strings.Split(string(data), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			s.m[k] = v
		}
	}
	return nil
}

// forgetfulSM counts the commands it applied, as part of its state, but
// Restore forgets the count.
type forgetfulSM struct {
	kvSM
	n uint64
}

func (s *forgetfulSM) Apply(e raft.Entry) any {
	s.n++
	return s.kvSM.Apply(e)
}

func (s *forgetfulSM) Snapshot() (raft.Snapshot, error) {
	kv, _ := s.kvSM.Snapshot()
	return byteSnapshot(append(binary.BigEndian.AppendUint64(nil, s.n), kv.(byteSnapshot)...)), nil
}

func (s *forgetfulSM) Restore(r io.Reader) error {
	var count [8]byte
	if _, err := io.ReadFull(r, count[:]); err != nil {
		return err
	}
	return s.kvSM.Restore(r)
}

// TestCheckStateMachineCatchesBrokenStateMachines runs the check against
// deliberately broken state machines: each must be reported, with the
// property it breaks.
func TestCheckStateMachineCatchesBrokenStateMachines(t *testing.T) {
	calls := 0
	cases := []struct {
		name  string
		newSM func() raft.StateMachine
		want  string
	}{
		{"Apply result depends on the replica", func() raft.StateMachine { return &nondetSM{kvSM{map[string]string{}}, &calls} }, "determinism"},
		{"snapshot bytes depend on map order", func() raft.StateMachine { return &unorderedSM{kvSM{map[string]string{}}} }, "differs"},
		{"Restore forgets part of the state", func() raft.StateMachine { return &forgetfulSM{kvSM: kvSM{map[string]string{}}} }, "differs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			CheckStateMachine(rec, tc.newSM, CheckOptions{Commands: kvCommand, Seeds: 6, Ticks: 600})
			if len(rec.errs) == 0 {
				t.Fatalf("CheckStateMachine reported nothing")
			}
			if !strings.Contains(rec.errs[0], tc.want) || !strings.Contains(rec.errs[0], "rerun this seed") {
				t.Fatalf("report %q does not mention %q and how to rerun", rec.errs[0], tc.want)
			}
			t.Logf("reported: %s", rec.errs[0])
		})
	}
}

// TestCheckStateMachineReportsPanics checks that a panicking state machine
// is reported with its seed rather than crashing the test binary.
func TestCheckStateMachineReportsPanics(t *testing.T) {
	rec := &recordingTB{TB: t}
	panicky := func() raft.StateMachine { return &panicSM{} }
	CheckStateMachine(rec, panicky, CheckOptions{Commands: func(r *rand.Rand) []byte { return []byte{byte(r.IntN(50))} }, Seeds: 1})
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "seed 1") || !strings.Contains(rec.errs[0], "panic") {
		t.Fatalf("got reports %q, want one naming seed 1 and the panic", rec.errs)
	}
}

type panicSM struct{ hashSM }

func (s *panicSM) Apply(e raft.Entry) any {
	if len(e.Data) > 0 && e.Data[0] == 7 {
		panic("command 7 is not supported")
	}
	return s.hashSM.Apply(e)
}

// TestCheckStateMachineRejectsMissingArguments checks the argument errors.
func TestCheckStateMachineRejectsMissingArguments(t *testing.T) {
	rec := &recordingTB{TB: t}
	CheckStateMachine(rec, newKV, CheckOptions{})
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "needs newSM and CheckOptions.Commands") {
		t.Fatalf("got %q", rec.errs)
	}
}
