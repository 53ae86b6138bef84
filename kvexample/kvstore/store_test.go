package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/raftgo/raft"
	"pgregory.net/rapid"
)

// applier feeds commands to a Store with increasing log indexes.
type applier struct {
	t     testing.TB
	s     *Store
	index uint64
}

func newApplier(t testing.TB, maxSessions int) *applier {
	return &applier{t: t, s: New(maxSessions)}
}

func (a *applier) do(c Command) Result {
	a.t.Helper()
	data, err := c.MarshalBinary()
	if err != nil {
		a.t.Fatalf("marshal %+v: %v", c, err)
	}
	a.index++
	return a.s.Apply(raft.Entry{Index: a.index, Term: 1, Data: data}).(Result)
}

func (a *applier) get(key string) string {
	v, ok := a.s.Get(key)
	if !ok {
		return "<absent>"
	}
	return string(v)
}

func TestApplySemantics(t *testing.T) {
	a := newApplier(t, 0)
	steps := []struct {
		name      string
		cmd       Command
		wantOK    bool
		wantFound bool
		wantValue string
		after     string // value of the key afterwards
	}{
		{"put creates", Command{Op: OpPut, Key: "k", Value: []byte("v1")}, true, false, "", "v1"},
		{"put overwrites", Command{Op: OpPut, Key: "k", Value: []byte("v2")}, true, true, "", "v2"},
		{"get through the log reads", Command{Op: OpGet, Key: "k"}, true, true, "v2", "v2"},
		{"cas with the wrong old value fails and reports the current one", Command{Op: OpCAS, Key: "k", Expect: []byte("v1"), Value: []byte("v3")}, false, true, "v2", "v2"},
		{"cas with the right old value swaps", Command{Op: OpCAS, Key: "k", Expect: []byte("v2"), Value: []byte("v3")}, true, true, "", "v3"},
		{"cas expecting absence fails on an existing key", Command{Op: OpCAS, Key: "k", ExpectAbsent: true, Value: []byte("x")}, false, true, "v3", "v3"},
		{"delete removes", Command{Op: OpDelete, Key: "k"}, true, true, "", "<absent>"},
		{"delete of a missing key reports not found", Command{Op: OpDelete, Key: "k"}, true, false, "", "<absent>"},
		{"cas on a missing key with an expected value fails", Command{Op: OpCAS, Key: "k", Expect: []byte(""), Value: []byte("x")}, false, false, "", "<absent>"},
		{"cas expecting absence creates", Command{Op: OpCAS, Key: "k", ExpectAbsent: true, Value: []byte("new")}, true, false, "", "new"},
		{"get of a missing key", Command{Op: OpGet, Key: "other"}, true, false, "", "new"},
	}
	for i, st := range steps {
		r := a.do(st.cmd)
		if r.Err != nil || r.OK != st.wantOK || r.Found != st.wantFound || string(r.Value) != st.wantValue || r.Index != uint64(i+1) || r.Op != st.cmd.Op {
			t.Errorf("%s: got %+v, want ok=%t found=%t value=%q index=%d", st.name, r, st.wantOK, st.wantFound, st.wantValue, i+1)
		}
		if got := a.get("k"); got != st.after {
			t.Errorf("%s: key is %q afterwards, want %q", st.name, got, st.after)
		}
	}
	if a.s.Applied() != uint64(len(steps)) || a.s.Len() != 1 {
		t.Errorf("Applied=%d Len=%d, want %d and 1", a.s.Applied(), a.s.Len(), len(steps))
	}
}

func TestDuplicateWriteIsAnsweredNotReapplied(t *testing.T) {
	a := newApplier(t, 0)
	first := a.do(Command{Op: OpCAS, ClientID: 7, Seq: 1, Key: "k", ExpectAbsent: true, Value: []byte("a")})
	if !first.OK || first.Duplicate {
		t.Fatalf("first CAS: %+v", first)
	}
	// Another client changes the key; then client 7's retry arrives.
	a.do(Command{Op: OpPut, ClientID: 8, Seq: 1, Key: "k", Value: []byte("b")})
	retry := a.do(Command{Op: OpCAS, ClientID: 7, Seq: 1, Key: "k", ExpectAbsent: true, Value: []byte("a")})
	if !retry.Duplicate || !retry.OK || retry.Index != first.Index {
		t.Fatalf("retry got %+v, want the stored result of index %d marked duplicate", retry, first.Index)
	}
	if got := a.get("k"); got != "b" {
		t.Fatalf("retry was applied again: key is %q, want %q", got, "b")
	}
	// A duplicate put does not overwrite a later write either.
	a.do(Command{Op: OpPut, ClientID: 7, Seq: 2, Key: "p", Value: []byte("old")})
	a.do(Command{Op: OpPut, Key: "p", Value: []byte("newer")})
	if r := a.do(Command{Op: OpPut, ClientID: 7, Seq: 2, Key: "p", Value: []byte("old")}); !r.Duplicate {
		t.Fatalf("duplicate put not detected: %+v", r)
	}
	if got := a.get("p"); got != "newer" {
		t.Fatalf("duplicate put reapplied: %q", got)
	}
	// An older sequence number than the last is refused.
	if r := a.do(Command{Op: OpPut, ClientID: 7, Seq: 1, Key: "p", Value: []byte("x")}); !errors.Is(r.Err, ErrStaleSequence) {
		t.Fatalf("stale sequence: got %+v", r)
	}
	if got := a.get("p"); got != "newer" {
		t.Fatalf("stale command applied: %q", got)
	}
	// The next sequence number applies normally.
	if r := a.do(Command{Op: OpPut, ClientID: 7, Seq: 3, Key: "p", Value: []byte("x")}); r.Duplicate || r.Err != nil || a.get("p") != "x" {
		t.Fatalf("next sequence: %+v, key %q", r, a.get("p"))
	}
}

func TestSessionsAreBoundedAndEvictIdlest(t *testing.T) {
	a := newApplier(t, 10)
	for c := uint64(1); c <= 10; c++ {
		a.do(Command{Op: OpPut, ClientID: c, Seq: 1, Key: "k", Value: []byte("v")})
	}
	// Client 1 stays active, so client 2 is now the idlest.
	a.do(Command{Op: OpPut, ClientID: 1, Seq: 2, Key: "k", Value: []byte("v")})
	a.do(Command{Op: OpPut, ClientID: 11, Seq: 1, Key: "k", Value: []byte("v")})
	if n := a.s.Sessions(); n != 10 {
		t.Fatalf("sessions = %d, want 10", n)
	}
	// Client 2 was forgotten: its retry is applied as a new command.
	if r := a.do(Command{Op: OpPut, ClientID: 2, Seq: 1, Key: "k", Value: []byte("v")}); r.Duplicate {
		t.Fatalf("evicted client's retry was still deduplicated")
	}
	// Client 1 was kept.
	if r := a.do(Command{Op: OpPut, ClientID: 1, Seq: 2, Key: "k", Value: []byte("v")}); !r.Duplicate {
		t.Fatalf("active client's session was evicted")
	}
}

func TestMalformedCommandChangesNothing(t *testing.T) {
	a := newApplier(t, 0)
	a.do(Command{Op: OpPut, Key: "k", Value: []byte("v")})
	good, _ := Command{Op: OpPut, ClientID: 1, Seq: 1, Key: "k", Value: []byte("zzz")}.MarshalBinary()
	for cut := 0; cut < len(good); cut++ {
		r := a.s.Apply(raft.Entry{Index: 100 + uint64(cut), Data: good[:cut]}).(Result)
		if !errors.Is(r.Err, ErrBadCommand) {
			t.Fatalf("truncated to %d bytes: got %+v, want ErrBadCommand", cut, r)
		}
	}
	if a.get("k") != "v" || a.s.Sessions() != 0 {
		t.Fatalf("a malformed command changed the state: k=%q sessions=%d", a.get("k"), a.s.Sessions())
	}
	if _, err := (Command{Op: 99}).MarshalBinary(); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("marshal of unknown op: %v", err)
	}
	if _, err := (Command{Op: OpPut, Seq: 3}).MarshalBinary(); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("marshal of seq without client: %v", err)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := Command{
			Op:           Op(rapid.IntRange(1, int(opEnd)-1).Draw(t, "op")),
			Key:          rapid.String().Draw(t, "key"),
			Value:        rapid.SliceOf(rapid.Byte()).Draw(t, "value"),
			Expect:       rapid.SliceOf(rapid.Byte()).Draw(t, "expect"),
			ExpectAbsent: rapid.Bool().Draw(t, "absent"),
		}
		if rapid.Bool().Draw(t, "session") {
			c.ClientID = rapid.Uint64Min(1).Draw(t, "client")
			c.Seq = rapid.Uint64Min(1).Draw(t, "seq")
		}
		data, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Command
		if err := got.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		if got.Op != c.Op || got.Key != c.Key || !bytes.Equal(got.Value, c.Value) || !bytes.Equal(got.Expect, c.Expect) ||
			got.ExpectAbsent != c.ExpectAbsent || got.ClientID != c.ClientID || got.Seq != c.Seq {
			t.Fatalf("round trip: got %+v want %+v", got, c)
		}
	})
}

func FuzzCommandDecode(f *testing.F) {
	seed, _ := Command{Op: OpCAS, ClientID: 3, Seq: 9, Key: "key", Value: []byte("v"), Expect: []byte("e")}.MarshalBinary()
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Command
		if err := c.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error does not wrap ErrBadCommand: %v", err)
			}
			return
		}
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded command does not re-encode: %v", err)
		}
		var c2 Command
		if err := c2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
	})
}

func snapshotBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: n=%d len=%d err=%v", n, buf.Len(), err)
	}
	return buf.Bytes()
}

func TestSnapshotIsPointInTime(t *testing.T) {
	a := newApplier(t, 0)
	for i := range 100 {
		a.do(Command{Op: OpPut, ClientID: uint64(i%5 + 1), Seq: uint64(i/5 + 1), Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint("v", i))})
	}
	sn, err := a.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot must not show in it.
	a.do(Command{Op: OpPut, Key: "k0", Value: []byte("changed")})
	a.do(Command{Op: OpDelete, Key: "k1"})
	a.do(Command{Op: OpPut, Key: "late", Value: []byte("x")})
	a.do(Command{Op: OpPut, ClientID: 1, Seq: 21, Key: "k2", Value: []byte("x")})
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sn.Release()

	restored := New(0)
	if err := restored.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if restored.Len() != 100 || restored.Applied() != 100 {
		t.Fatalf("restored %d keys at index %d, want 100 at 100", restored.Len(), restored.Applied())
	}
	for _, k := range []string{"k0", "k1", "k2"} {
		if v, ok := restored.Get(k); !ok || string(v) != "v"+k[1:] {
			t.Errorf("restored %s = %q, %t", k, v, ok)
		}
	}
	if _, ok := restored.Get("late"); ok {
		t.Error("a write after the snapshot is in it")
	}
	// The live store still has its own state.
	if a.get("k0") != "changed" || a.get("k1") != "<absent>" {
		t.Errorf("live store lost writes: k0=%q k1=%q", a.get("k0"), a.get("k1"))
	}
	// Sessions travel in the snapshot: client 1's last request (seq 20,
	// key k95) is answered as a duplicate after restore.
	data, _ := Command{Op: OpPut, ClientID: 1, Seq: 20, Key: "k95", Value: []byte("retry")}.MarshalBinary()
	r := restored.Apply(raft.Entry{Index: 101, Data: data}).(Result)
	if !r.Duplicate || r.Index != 96 {
		t.Fatalf("after restore the retry got %+v, want a duplicate of index 96", r)
	}
	if v, _ := restored.Get("k95"); string(v) != "v95" {
		t.Fatalf("retry after restore reapplied: %q", v)
	}
}

func TestSnapshotBytesAreDeterministic(t *testing.T) {
	mk := func(order []int) []byte {
		a := newApplier(t, 0)
		for _, i := range order {
			a.do(Command{Op: OpPut, ClientID: uint64(i + 1), Seq: 1, Key: fmt.Sprint("k", i), Value: []byte{byte(i)}})
		}
		return snapshotBytes(t, a.s)
	}
	// Same state reached by the same commands: same bytes, however the
	// maps happen to iterate.
	if !bytes.Equal(mk([]int{1, 2, 3, 4, 5}), mk([]int{1, 2, 3, 4, 5})) {
		t.Fatal("equal states wrote different snapshots")
	}
	// Restore then snapshot reproduces the bytes.
	orig := mk([]int{5, 3, 1})
	s := New(0)
	if err := s.Restore(bytes.NewReader(orig)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, s), orig) {
		t.Fatal("restore+snapshot changed the bytes")
	}
}

func TestRestoreRejectsCorruptSnapshots(t *testing.T) {
	a := newApplier(t, 0)
	a.do(Command{Op: OpPut, ClientID: 1, Seq: 1, Key: "a", Value: []byte("1")})
	a.do(Command{Op: OpPut, Key: "b", Value: bytes.Repeat([]byte("x"), 100)})
	good := snapshotBytes(t, a.s)

	target := New(0)
	tdata, _ := Command{Op: OpPut, Key: "keep", Value: []byte("me")}.MarshalBinary()
	target.Apply(raft.Entry{Index: 1, Data: tdata})

	check := func(name string, data []byte) {
		t.Helper()
		err := target.Restore(bytes.NewReader(data))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s: Restore returned %v, want ErrBadSnapshot", name, err)
		}
		if v, ok := target.Get("keep"); !ok || string(v) != "me" || target.Len() != 1 {
			t.Fatalf("%s: a failed Restore changed the store", name)
		}
	}
	for cut := 0; cut < len(good); cut++ {
		check(fmt.Sprintf("truncated to %d", cut), good[:cut])
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x40
		check(fmt.Sprintf("byte %d flipped", i), bad)
	}
	check("trailing byte", append(bytes.Clone(good), 0))
	if err := target.Restore(bytes.NewReader(good)); err != nil {
		t.Fatalf("good snapshot refused: %v", err)
	}
}

func TestSnapshotWriteToRunsWhileApplying(t *testing.T) {
	// Under -race this proves WriteTo reads nothing Apply writes.
	a := newApplier(t, 0)
	for i := range 1000 {
		a.do(Command{Op: OpPut, Key: fmt.Sprint("k", i), Value: []byte("before")})
	}
	var wg sync.WaitGroup
	var snaps [][]byte
	var mu sync.Mutex
	for round := range 5 {
		sn, _ := a.s.Snapshot()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sn.Release()
			var buf bytes.Buffer
			if _, err := sn.WriteTo(&buf); err != nil {
				t.Error(err)
			}
			mu.Lock()
			snaps = append(snaps, buf.Bytes())
			mu.Unlock()
		}()
		for i := range 1000 {
			a.do(Command{Op: OpPut, Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint("round", round))})
		}
	}
	wg.Wait()
	for _, b := range snaps {
		s := New(0)
		if err := s.Restore(bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		// Every snapshot holds one consistent round: all keys equal.
		first, _ := s.Get("k0")
		for i := range 1000 {
			if v, _ := s.Get(fmt.Sprint("k", i)); !bytes.Equal(v, first) {
				t.Fatalf("snapshot at %d mixes states: k0=%q k%d=%q", s.Applied(), first, i, v)
			}
		}
	}
}

func TestRestoredReplicaReturnsIdenticalResults(t *testing.T) {
	// Regression: a restored Store returned Value nil where the live one
	// returned an empty slice, which a result comparison flags as
	// non-determinism.
	live := newApplier(t, 0)
	live.do(Command{Op: OpPut, Key: "k", Value: []byte{}})
	live.do(Command{Op: OpCAS, ClientID: 1, Seq: 1, Key: "k", Expect: []byte("x"), Value: []byte("y")})
	live.do(Command{Op: OpPut, ClientID: 2, Seq: 1, Key: "p", Value: []byte("v")})
	restored := &applier{t: t, s: New(0), index: live.index}
	if err := restored.s.Restore(bytes.NewReader(snapshotBytes(t, live.s))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Command{
		{Op: OpCAS, Key: "k", Expect: []byte("x"), Value: []byte("y")},
		{Op: OpGet, Key: "k"},
		{Op: OpCAS, ClientID: 1, Seq: 1, Key: "k", Expect: []byte("x"), Value: []byte("y")},
		{Op: OpPut, ClientID: 2, Seq: 1, Key: "p", Value: []byte("v")},
	} {
		a, b := live.do(c), restored.do(c)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%v: live %#v, restored %#v", c.Op, a, b)
		}
	}
}
