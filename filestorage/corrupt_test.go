package filestorage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/raftgo/raft"
)

// envInt reads a test size from the environment.
func envInt(t testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// TestRandomDamage flips a bit in, or truncates, a random file of a
// storage at a random offset, then opens it. Each outcome must be one of:
// a *CorruptError naming the damaged file (or, for a truncation that ends
// on a record boundary, the segment after it); or a successful open whose
// state is exactly the state after some prefix of the workload, shorter
// than the whole only if the damage was in the last segment (a torn tail).
// A damaged snapshot file is caught when it is read. Never a panic, never
// wrong data. RAFT_STORAGE_DAMAGE_TRIALS sets the number of trials.
func TestRandomDamage(t *testing.T) {
	ops := crashScript()
	opts := Options{SegmentSize: 300}
	base := newMemFS()
	s, err := open(base, crashDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if err := op.apply(s); err != nil {
			t.Fatalf("%s: %v", op.desc, err)
		}
	}
	s.Close()
	history := make([]raft.State, len(ops)+1)
	for n := range history {
		history[n], _ = modelAfter(t, ops, n)
	}
	_, finalSnap := modelAfter(t, ops, len(ops))
	files := base.files()
	var segs []string
	for _, f := range files {
		if strings.HasSuffix(f, ".wal") {
			segs = append(segs, f)
		}
	}
	if len(segs) < 3 {
		t.Fatalf("the workload left only %d segments; want several", len(segs))
	}
	lastSeg := segs[len(segs)-1]
	t.Logf("files: %v", files)

	trials := envInt(t, "RAFT_STORAGE_DAMAGE_TRIALS", 1000)
	rng := rand.New(rand.NewPCG(7, 7))
	counts := map[string]int{}
	for trial := range trials {
		fsys := base.clone()
		victim := files[rng.IntN(len(files))]
		data := fsys.names[victim].data
		off := rng.IntN(len(data))
		var what string
		truncated := rng.IntN(3) == 0
		if truncated {
			fsys.names[victim].data = data[:off]
			what = fmt.Sprintf("trial %d: %s truncated to %d bytes", trial, path.Base(victim), off)
		} else {
			bit := byte(1) << rng.IntN(8)
			data[off] ^= bit
			what = fmt.Sprintf("trial %d: %s bit %#x flipped at offset %d", trial, path.Base(victim), bit, off)
		}
		isSnap := strings.HasSuffix(victim, ".snap")

		s, err := open(fsys, crashDir, opts)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("%s: open failed with %v, want a *CorruptError", what, err)
			}
			named := ce.File == victim
			if truncated && !named && !isSnap {
				// A cut on a record boundary is seen at the next segment.
				for i := range len(segs) - 1 {
					named = named || (segs[i] == victim && ce.File == segs[i+1])
				}
			}
			if !named || ce.Offset < 0 {
				t.Fatalf("%s: error %q does not name the damaged file", what, err)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Fatalf("%s: error %q does not give the offset", what, err)
			}
			counts["refused to open"]++
			continue
		}
		st, err := s.Load()
		if err != nil {
			t.Fatalf("%s: Load after a successful open: %v", what, err)
		}
		n := -1
		for i := len(history) - 1; i >= 0; i-- {
			if statesEqual(st, history[i]) {
				n = i
				break
			}
		}
		switch {
		case n < 0:
			t.Fatalf("%s: opened with a state %s that the workload never had", what, describe(st))
		case n < len(ops) && victim != lastSeg:
			t.Fatalf("%s: damage outside the last segment silently lost calls %d..%d", what, n+1, len(ops))
		case n < len(ops):
			counts["cut a torn tail"]++
		case isSnap:
			_, rc, err := s.Snapshot()
			if err != nil {
				t.Fatalf("%s: Snapshot: %v", what, err)
			}
			got, rerr := io.ReadAll(rc)
			rc.Close()
			var ce *CorruptError
			if rerr == nil && !bytes.Equal(got, finalSnap) {
				t.Fatalf("%s: the snapshot read back wrong data without an error", what)
			}
			if rerr != nil && !errors.As(rerr, &ce) {
				t.Fatalf("%s: reading the damaged snapshot failed with %v, want a *CorruptError", what, rerr)
			}
			if rerr == nil {
				t.Fatalf("%s: reading the damaged snapshot succeeded", what)
			}
			counts["snapshot read refused"]++
		default:
			counts["unaffected"]++
		}
		s.Close()
	}
	t.Logf("outcomes of %d trials: %v", trials, counts)
	if counts["refused to open"] == 0 || counts["cut a torn tail"] == 0 {
		t.Fatalf("the trials did not exercise both refusal and tail cutting: %v", counts)
	}
}
