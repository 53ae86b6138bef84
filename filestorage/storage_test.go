package filestorage

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgo/raft"
)

func mustOpen(t *testing.T, fsys fileSystem, dir string, opts Options) *Storage {
	t.Helper()
	s, err := open(fsys, dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func TestSaveIsOneWriteAndOneSyncWhateverTheBatchSize(t *testing.T) {
	for _, n := range []uint64{1, 16, 256} {
		fsys := newMemFS()
		s := mustOpen(t, fsys, "/d", Options{})
		w0, s0, d0 := fsys.counts()
		if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: 0}, testEntries(1, n, 1, 128)); err != nil {
			t.Fatal(err)
		}
		w1, s1, d1 := fsys.counts()
		if w1-w0 != 1 || s1-s0 != 1 || d1 != d0 {
			t.Errorf("Save of %d entries: %d writes, %d file syncs, %d dir syncs; want 1, 1, 0", n, w1-w0, s1-s0, d1-d0)
		}
		// A Save that changes nothing does not touch the disk.
		if err := s.Save(raft.HardState{Term: 1, Vote: 1}, nil); err != nil {
			t.Fatal(err)
		}
		if w2, s2, _ := fsys.counts(); w2 != w1 || s2 != s1 {
			t.Errorf("a Save that changes nothing wrote %d times and synced %d times", w2-w1, s2-s1)
		}
	}
}

// Saves inside the preallocated zeros sync data only and leave the file's
// size alone; one Save per preallocation step extends the file and syncs
// fully. With preallocation off, every Save extends the file.
func TestPreallocatedSavesSyncDataOnly(t *testing.T) {
	for _, prealloc := range []int64{4096, -1} {
		fsys := newMemFS()
		s := mustOpen(t, fsys, "/d", Options{Preallocate: prealloc})
		seg := "/d/" + segName(1)
		_, s0, _ := fsys.counts()
		d0 := fsys.dataSyncs
		const saves = 100
		grew := 0
		for i := uint64(1); i <= saves; i++ {
			size, _ := fsys.Size(seg)
			if err := s.Save(raft.HardState{Term: 1}, testEntries(i, i, 1, 100)); err != nil {
				t.Fatal(err)
			}
			if now, _ := fsys.Size(seg); now != size {
				grew++
			}
		}
		_, s1, _ := fsys.counts()
		full, data := s1-s0-(fsys.dataSyncs-d0), fsys.dataSyncs-d0
		if full != grew || full+data != saves {
			t.Errorf("Preallocate %d: %d full syncs, %d data syncs, %d Saves grew the file; want a full sync exactly for each Save that grew it", prealloc, full, data, grew)
		}
		// About 130 bytes a Save: 13 KB in 4 KiB steps.
		if prealloc > 0 && (grew < 2 || grew > 5) {
			t.Errorf("Preallocate %d: %d of %d Saves grew the file, want 2-5", prealloc, grew, saves)
		}
		if prealloc < 0 && grew != saves {
			t.Errorf("without preallocation %d of %d Saves grew the file", grew, saves)
		}
		s.Close()
		s = mustOpen(t, fsys, "/d", Options{Preallocate: prealloc})
		if st, _ := s.Load(); len(st.Entries) != saves {
			t.Errorf("Preallocate %d: reopened with %d entries, want %d", prealloc, len(st.Entries), saves)
		}
		s.Close()
	}
}

func TestOverwriteAppendsOnlyTheNewRecords(t *testing.T) {
	fsys := newMemFS()
	s := mustOpen(t, fsys, "/d", Options{})
	if err := s.Save(raft.HardState{Term: 1}, testEntries(1, 1000, 1, 100)); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	before := fsys.written
	fsys.mu.Unlock()
	if err := s.Save(raft.HardState{Term: 1}, testEntries(10, 10, 2, 100)); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	wrote := fsys.written - before
	fsys.mu.Unlock()
	if wrote > 200 {
		t.Errorf("overwriting from index 10 of a 1000-entry log wrote %d bytes; want only the new record", wrote)
	}
	st, _ := s.Load()
	if len(st.Entries) != 10 || st.Entries[9].Term != 2 {
		t.Fatalf("after the overwrite: %s", describe(st))
	}
}

func TestCompactionDeletesOldSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 20; i++ {
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i*50+1, i*50+50, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	segsBefore := countFiles(t, dir, ".wal")
	if segsBefore < 10 {
		t.Fatalf("only %d segments for 100 KB of entries in 4 KB segments", segsBefore)
	}
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 900, Term: 1}, strings.NewReader("state")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(900); err != nil {
		t.Fatal(err)
	}
	s.rm.wait() // deletions run in the background
	segsAfter := countFiles(t, dir, ".wal")
	if segsAfter > 4 {
		t.Errorf("after compacting 900 of 1000 entries, %d of %d segments remain", segsAfter, segsBefore)
	}
	if s.segmentCount() != segsAfter {
		t.Errorf("storage tracks %d segments, directory has %d", s.segmentCount(), segsAfter)
	}
	s.Close()
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.Load()
	if st.CompactedIndex != 900 || len(st.Entries) != 100 || st.Entries[0].Index != 901 {
		t.Fatalf("after reopen: %s", describe(st))
	}
}

func countFiles(t *testing.T, dir, ext string) int {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, de := range des {
		if filepath.Ext(de.Name()) == ext {
			n++
		}
	}
	return n
}

func TestLockKeepsASecondOpenOut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

func TestClosedStorageReturnsErrClosed(t *testing.T) {
	s := mustOpen(t, newMemFS(), "/d", Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("Load: %v", err)
	}
	if err := s.Save(raft.HardState{Term: 1}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Save: %v", err)
	}
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 1}, strings.NewReader("")); !errors.Is(err, ErrClosed) {
		t.Errorf("SaveSnapshot: %v", err)
	}
	if _, _, err := s.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot: %v", err)
	}
	if err := s.Compact(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Compact: %v", err)
	}
}

func TestFailedSyncIsPermanentUntilReopen(t *testing.T) {
	fsys := newMemFS()
	s := mustOpen(t, fsys, "/d", Options{})
	if err := s.Save(raft.HardState{Term: 1}, testEntries(1, 5, 1, 10)); err != nil {
		t.Fatal(err)
	}
	fsys.failAt = fsys.ops + 2 // the sync of the next Save
	if err := s.Save(raft.HardState{Term: 1}, testEntries(6, 6, 1, 10)); err == nil {
		t.Fatal("Save with a failing fsync returned nil")
	}
	fsys.crashed, fsys.failAt = false, 0 // the disk works again...
	if err := s.Save(raft.HardState{Term: 1}, testEntries(6, 6, 1, 10)); err == nil || !strings.Contains(err.Error(), "reopen") {
		t.Fatalf("Save after a failed fsync: %v, want the sticky failure", err)
	}
	s.Close()
	s = mustOpen(t, fsys, "/d", Options{}) // ...and reopening recovers
	defer s.Close()
	st, _ := s.Load()
	if last := st.Entries[len(st.Entries)-1].Index; last < 5 {
		t.Fatalf("acknowledged entries lost: last index %d", last)
	}
}

func TestTornTailOnDiskIsCut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := testEntries(1, 10, 1, 50)
	if err := s.Save(raft.HardState{Term: 1, Commit: 3}, want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	seg := filepath.Join(dir, segName(1))
	file, _ := os.ReadFile(seg)
	good := file[:recordsEnd(t, dir)]
	// Half of a further record in the preallocated zeros, as a crash
	// mid-write leaves it.
	rec := appendEntry(nil, testEntries(11, 11, 1, 50)[0], true, 0)
	copy(file[len(good):], rec[:len(rec)/2])
	if err := os.WriteFile(seg, file, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open with a torn tail: %v", err)
	}
	defer s.Close()
	st, _ := s.Load()
	if !statesEqual(st, raft.State{HardState: raft.HardState{Term: 1, Commit: 3}, Entries: want}) {
		t.Fatalf("after cutting the torn tail: %s", describe(st))
	}
	if now, _ := os.ReadFile(seg); !bytes.Equal(now, good) {
		t.Fatalf("segment is %d bytes after recovery, want the %d bytes of whole records", len(now), len(good))
	}
	// The cut segment takes further writes (preallocating again).
	if err := s.Save(raft.HardState{Term: 1, Commit: 3}, testEntries(11, 12, 1, 50)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Load(); len(st.Entries) != 12 {
		t.Fatalf("after a Save on the cut segment: %s", describe(st))
	}
}

// recordsEnd returns where the records of the single segment in dir end
// (the rest of the file is preallocated zeros).
func recordsEnd(t *testing.T, dir string) int {
	t.Helper()
	st, cut, err := replay(osFS{}, dir, []uint64{1})
	if err != nil || cut >= 0 {
		t.Fatalf("replay: cut %d, %v", cut, err)
	}
	return int(st.segs[0].size)
}

func TestDamageBeforeTheTailIsAnErrorNamingFileAndOffset(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 3; i++ {
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i*10+1, i*10+10, 1, 50)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	seg := filepath.Join(dir, segName(1))
	data, _ := os.ReadFile(seg)
	off := recordsEnd(t, dir) / 3
	data[off] ^= 0x10
	os.WriteFile(seg, data, 0o644)
	_, err = Open(dir, Options{})
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("open: %v, want a *CorruptError", err)
	}
	if ce.File != seg || ce.Offset > int64(off) || ce.Offset < int64(off)-100 {
		t.Fatalf("error names %s offset %d; want %s near offset %d", ce.File, ce.Offset, seg, off)
	}
	if !strings.Contains(err.Error(), seg) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("error text %q does not name file and offset", err)
	}
}

func TestMissingSegmentIsAnError(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 10}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 10; i++ {
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i*10+1, i*10+10, 1, 50)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for _, victim := range []uint64{1, 2} { // the first, then a middle one
		if err := os.Remove(filepath.Join(dir, segName(victim))); err != nil {
			t.Fatal(err)
		}
		_, err = Open(dir, opts)
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("open without segment %d: %v, want a *CorruptError", victim, err)
		}
		t.Logf("without segment %d: %v", victim, err)
	}
}

func TestSnapshotReaderRefusesDamagedFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("snapshot"), 1000)
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 5, Term: 1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	name := filepath.Join(dir, snapName(5, 1))
	raw, _ := os.ReadFile(name)
	raw[4000] ^= 1
	os.WriteFile(name, raw, 0o644)
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, rc, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != name {
		t.Fatalf("reading a damaged snapshot: %v, want a *CorruptError naming %s", err, name)
	}
}

func TestInterruptedSnapshotLeavesNoFiles(t *testing.T) {
	fsys := newMemFS()
	s := mustOpen(t, fsys, "/d", Options{})
	if err := s.Save(raft.HardState{Term: 1}, testEntries(1, 5, 1, 10)); err != nil {
		t.Fatal(err)
	}
	r := io.MultiReader(strings.NewReader("partial"), errReader{})
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 3, Term: 1}, r); err == nil {
		t.Fatal("SaveSnapshot with a failing reader returned nil")
	}
	for _, f := range fsys.files() {
		if strings.Contains(f, "snap") {
			t.Errorf("a failed SaveSnapshot left %s behind", f)
		}
	}
	if _, _, err := s.Snapshot(); !errors.Is(err, raft.ErrNoSnapshot) {
		t.Errorf("Snapshot after a failed SaveSnapshot: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("injected read error") }

// removeHookFS lets a test see, delay or fail deletions, and the renames
// that keep dead segments as free files instead.
type removeHookFS struct {
	fileSystem
	onRemove func(name string) error
}

func (f removeHookFS) Remove(name string) error {
	if err := f.onRemove(name); err != nil {
		return err
	}
	return f.fileSystem.Remove(name)
}

func (f removeHookFS) Rename(oldName, newName string) error {
	if strings.HasSuffix(newName, ".free") {
		if err := f.onRemove(oldName); err != nil {
			return err
		}
	}
	return f.fileSystem.Rename(oldName, newName)
}

// A Compact that frees segments does not wait for their deletion: Saves
// go on while a slow deletion runs, and Close waits for it.
func TestSegmentDeletionDoesNotBlockSaves(t *testing.T) {
	release := make(chan struct{})
	started := make(chan string, 100)
	fsys := removeHookFS{newMemFS(), func(name string) error {
		if strings.HasSuffix(name, ".wal") {
			started <- name
			<-release
		}
		return nil
	}}
	s := mustOpen(t, fsys, "/d", Options{SegmentSize: 4 << 10})
	s.rm.async = true
	for i := uint64(0); i < 20; i++ {
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i*50+1, i*50+50, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 900, Term: 1}, strings.NewReader("state")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(900); err != nil {
		t.Fatal(err)
	}
	first := <-started // the first deletion is stuck
	if want := "/d/" + segName(1); first != want {
		t.Fatalf("first deletion is %s, want the oldest segment %s", first, want)
	}
	if err := s.Save(raft.HardState{Term: 1}, testEntries(1001, 1001, 1, 100)); err != nil {
		t.Fatalf("Save during a stuck deletion: %v", err)
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a deletion was still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, fsys, "/d", Options{SegmentSize: 4 << 10})
	defer s.Close()
	if st, _ := s.Load(); st.CompactedIndex != 900 || len(st.Entries) != 101 {
		t.Fatalf("after reopen: %s", describe(st))
	}
	if n := s.segmentCount(); n > 4 {
		t.Fatalf("%d segments left after the deletions finished", n)
	}
}

// When a deletion fails, no newer segment is deleted after it (that would
// leave a hole the next Open refuses); the failed one and those after it
// are retried at the next compaction.
func TestFailedSegmentDeletionIsRetriedWithoutAHole(t *testing.T) {
	mem := newMemFS()
	var mu sync.Mutex
	fail := true
	fsys := removeHookFS{mem, func(name string) error {
		mu.Lock()
		defer mu.Unlock()
		if fail && strings.HasSuffix(name, segName(3)) {
			return errors.New("injected: cannot delete")
		}
		return nil
	}}
	countSegs := func() int {
		n := 0
		for _, name := range mem.files() {
			if strings.HasSuffix(name, ".wal") {
				n++
			}
		}
		return n
	}
	opts := Options{SegmentSize: 4 << 10}
	s := mustOpen(t, fsys, "/d", opts)
	s.rm.async = true
	defer s.Close()
	for i := uint64(0); i < 20; i++ {
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i*50+1, i*50+50, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 900, Term: 1}, strings.NewReader("state")); err != nil {
		t.Fatal(err)
	}
	// The failure may be reported by this Compact or, had it happened
	// later, by the next one.
	if err := s.Compact(900); err != nil && !strings.Contains(err.Error(), "injected") {
		t.Fatal(err)
	}
	s.rm.wait()
	if n := countSegs(); n < 10 {
		t.Fatalf("only %d segments left: deletions went on past the failed one", n)
	}
	// A crash now must find no hole.
	if _, err := open(mem.crash(loseUnsynced, mem.rng), "/d", opts); err != nil {
		t.Fatalf("open after a failed deletion: %v", err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if err := s.Save(raft.HardState{Term: 1}, testEntries(1001, 1100, 1, 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(raft.SnapshotMeta{Index: 1000, Term: 1}, strings.NewReader("state")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(1000); err != nil && !strings.Contains(err.Error(), "injected") {
		t.Fatal(err)
	}
	s.rm.wait()
	if n := countSegs(); n > 6 {
		t.Fatalf("%d segments left after the retry, want the dead ones gone", n)
	}
	if err := s.rm.kick(); err != nil {
		t.Fatalf("the retry succeeded, but the remover still reports %v", err)
	}
}

// While Saves are large the log is extended without zeros (each such Save
// fully synced); when they are small again, zeros are written ahead again
// and Saves sync data only.
func TestLargeWritesExtendWithoutZeros(t *testing.T) {
	fsys := newMemFS()
	s := mustOpen(t, fsys, "/d", Options{Preallocate: 4096})
	seg := "/d/" + segName(1)
	save := func(i uint64, size int) {
		t.Helper()
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i, i, 1, size)); err != nil {
			t.Fatal(err)
		}
	}
	syncs := func() (full, data int) {
		_, all, _ := fsys.counts()
		return all - fsys.dataSyncs, fsys.dataSyncs
	}
	i := uint64(1)
	for ; i <= 20; i++ { // the average passes 32 KiB after about 13
		save(i, 40<<10)
	}
	full0, data0 := syncs()
	for ; i <= 40; i++ {
		save(i, 40<<10)
	}
	full1, data1 := syncs()
	size, _ := fsys.Size(seg)
	s.mu.Lock()
	end := s.segs[len(s.segs)-1].size
	s.mu.Unlock()
	if size != end || full1-full0 != 20 || data1 != data0 {
		t.Fatalf("large Saves: file %d bytes for %d of records; %d full and %d data syncs for 20 Saves; want no zeros and a full sync each",
			size, end, full1-full0, data1-data0)
	}
	for ; i <= 200; i++ {
		save(i, 100)
	}
	full2, data2 := syncs()
	size, _ = fsys.Size(seg)
	s.mu.Lock()
	end = s.segs[len(s.segs)-1].size
	s.mu.Unlock()
	if size <= end || data2-data1 < 100 || full2-full1 > 20 {
		t.Fatalf("small Saves again: file %d bytes for %d of records; %d full and %d data syncs for 160 Saves; want zeros ahead and mostly data syncs",
			size, end, full2-full1, data2-data1)
	}
	s.Close()
	s = mustOpen(t, fsys, "/d", Options{Preallocate: 4096})
	defer s.Close()
	if st, _ := s.Load(); len(st.Entries) != 200 || len(st.Entries[39].Data) != 40<<10 {
		t.Fatalf("reopened: %s", describe(st))
	}
}

// TestNewSegmentFollowsTheWriteSize checks that a segment begun while
// writes are large starts without zeros ahead (they would be written and
// synced on the write path, only to be overwritten), and one begun while
// writes are small starts with them.
func TestNewSegmentFollowsTheWriteSize(t *testing.T) {
	fsys := newMemFS()
	// Zeros ahead (64 KiB) outlast a 40 KiB write, so they would show.
	s := mustOpen(t, fsys, "/d", Options{Preallocate: 64 << 10, SegmentSize: 256 << 10})
	defer s.Close()
	i := uint64(1)
	save := func(size int) (newSegment bool) {
		t.Helper()
		s.mu.Lock()
		n := len(s.segs)
		s.mu.Unlock()
		if err := s.Save(raft.HardState{Term: 1}, testEntries(i, i, 1, size)); err != nil {
			t.Fatal(err)
		}
		i++
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.segs) > n
	}
	// beyondRecords returns how far the newest segment's file extends
	// beyond its records.
	beyondRecords := func() int64 {
		t.Helper()
		s.mu.Lock()
		sg := s.segs[len(s.segs)-1]
		s.mu.Unlock()
		size, err := fsys.Size("/d/" + segName(sg.seq))
		if err != nil {
			t.Fatal(err)
		}
		return size - sg.size
	}
	for range 20 { // the write-size average passes 32 KiB
		save(40 << 10)
	}
	for !save(40 << 10) {
	}
	if extra := beyondRecords(); extra != 0 {
		t.Fatalf("segment begun during 40 KiB writes has %d bytes beyond its records, want no zeros", extra)
	}
	for range 20 { // and falls back below it
		save(2 << 10)
	}
	for !save(2 << 10) {
	}
	if extra := beyondRecords(); extra <= 0 {
		t.Fatalf("segment begun during 2 KiB writes has %d bytes beyond its records, want zeros ahead", extra)
	}
}

// createCountFS counts new segment files and reused ones.
type createCountFS struct {
	fileSystem
	created, reused *int
}

func (f createCountFS) Create(name string) (file, error) {
	if strings.HasSuffix(name, ".wal.tmp") {
		*f.created++
	}
	return f.fileSystem.Create(name)
}

func (f createCountFS) Rename(oldName, newName string) error {
	if strings.HasSuffix(oldName, ".free") {
		*f.reused++
	}
	return f.fileSystem.Rename(oldName, newName)
}

// Dead segments are kept as free files (at most defaultMaxFree) and new
// segments are written into them; the records of a file's previous life
// are never read back as the new segment's, before or after a reopen.
func TestDeadSegmentsAreWrittenAgain(t *testing.T) {
	var created, reused int
	fsys := createCountFS{newMemFS(), &created, &reused}
	opts := Options{SegmentSize: 2 << 10}
	s := mustOpen(t, fsys, "/d", opts)
	model := raft.NewMemoryStorage()
	save := func(hs raft.HardState, ents []raft.Entry) {
		t.Helper()
		for _, st := range []raft.Storage{s, model} {
			if err := st.Save(hs, ents); err != nil {
				t.Fatal(err)
			}
		}
	}
	last := uint64(0)
	for round := range 30 {
		// Rounds alternate long and short segments, so some are written
		// into the file of a longer one.
		size := 40
		if round%3 == 0 {
			size = 700
		}
		for range 4 {
			save(raft.HardState{Term: 1, Commit: last}, testEntries(last+1, last+2, 1, size))
			last += 2
		}
		meta := raft.SnapshotMeta{Index: last - 1, Term: 1}
		for _, st := range []raft.Storage{s, model} {
			if err := st.SaveSnapshot(meta, strings.NewReader("snap")); err != nil {
				t.Fatal(err)
			}
			if err := st.Compact(last - 2); err != nil {
				t.Fatal(err)
			}
		}
		var frees int
		for _, f := range fsys.fileSystem.(*memFS).files() {
			if strings.HasSuffix(f, ".free") {
				frees++
			}
		}
		if frees > defaultMaxFree {
			t.Fatalf("round %d: %d free files, want at most %d", round, frees, defaultMaxFree)
		}
		want, _ := model.Load()
		for i := range 2 {
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if !statesEqual(got, want) {
				t.Fatalf("round %d, reopened %d times: got %s, want %s", round, i, describe(got), describe(want))
			}
			s.Close()
			s = mustOpen(t, fsys, "/d", opts)
		}
	}
	// Write on into a reused file, and close: Close cuts the active
	// segment at its last record, so the next Open finds the end at the
	// file's end.
	for was := reused; reused == was; {
		save(raft.HardState{Term: 1, Commit: last}, testEntries(last+1, last+1, 1, 40))
		last++
		if last%8 == 0 {
			if err := s.SaveSnapshot(raft.SnapshotMeta{Index: last - 1, Term: 1}, strings.NewReader("snap")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(last - 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	save(raft.HardState{Term: 1, Commit: last}, testEntries(last+1, last+1, 1, 40))
	s.Close()
	var seqs []uint64
	for _, f := range fsys.fileSystem.(*memFS).files() {
		if seq, ok := parseSegName(filepath.Base(f)); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	if _, cut, err := replay(fsys, "/d", seqs); err != nil || cut != -1 {
		t.Fatalf("replay after Close: cut %d, %v; want nothing to cut", cut, err)
	}
	if reused == 0 || reused < created/2 {
		t.Fatalf("%d segments written into free files and %d into new ones; want most reused", reused, created)
	}
	t.Logf("%d segments written into free files, %d into new ones", reused, created)
}

// A torn batch in a segment written into a dead one's file can lose the
// blocks of its first record, which then hold a record of the file's
// previous life again, while its later records reach the disk. Recovery
// must cut them off: otherwise a later Save ending exactly where they begin
// would make them read as following it. (Equal-size records make the
// previous life's records line up with the new ones; the test writes until
// the end of the active segment sits on one.)
func TestTornBatchOverPreviousLifeIsCut(t *testing.T) {
	fsys := newMemFS()
	opts := Options{SegmentSize: 2 << 10}
	s := mustOpen(t, fsys, "/d", opts)
	last := uint64(0)
	save := func(term uint64, n int) {
		t.Helper()
		// The hard state does not change, so every batch is entry
		// records only.
		if err := s.Save(raft.HardState{Term: 2}, testEntries(last+1, last+uint64(n), term, 40)); err != nil {
			t.Fatal(err)
		}
		last += uint64(n)
	}
	// crash restarts the machine with what was synced, without a Close.
	crash := func() raft.State {
		t.Helper()
		fsys = fsys.crash(loseUnsynced, nil)
		s = mustOpen(t, fsys, "/d", opts)
		st, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	recLen := len(appendEntry(nil, testEntries(1, 1, 1, 40)[0], true, 0))
	for range 5000 {
		save(1, 1)
		if last%10 == 0 {
			if err := s.SaveSnapshot(raft.SnapshotMeta{Index: last - 1, Term: 1}, strings.NewReader("snap")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(last - 1); err != nil {
				t.Fatal(err)
			}
		}
		sg := s.segs[len(s.segs)-1]
		ino := fsys.names[s.path(segName(sg.seq))]
		buf := bytes.Clone(ino.data)
		body, _, _ := decodeFrame(buf, 0)
		hdr, _ := decodeBody(body)
		end := int(sg.size)
		if hdr.cp.prevSalt == hdr.cp.salt || end+3*recLen > int(opts.SegmentSize) || end+2*recLen > len(buf) {
			continue
		}
		if _, n, err := decodeFrame(buf[end:], hdr.cp.prevSalt); err != nil || n != recLen {
			continue
		}
		// The batch of entries k and k+1 is written; then its first
		// record's blocks are put back as they were, and the machine
		// crashes.
		k := last + 1
		save(1, 2)
		copy(ino.data[end:end+recLen], buf[end:])
		copy(ino.synced[end:end+recLen], buf[end:])
		last = k - 1
		if st := crash(); st.Entries[len(st.Entries)-1].Index != k-1 {
			t.Fatalf("after the torn batch: %s, want entries up to %d", describe(st), k-1)
		}
		save(2, 1) // entry k again, term 2, the same size as the lost one
		st := crash()
		defer s.Close()
		if e := st.Entries[len(st.Entries)-1]; e.Index != k || e.Term != 2 {
			t.Fatalf("recovered up to entry %d term %d, want %d term 2: a record of the torn batch came back", e.Index, e.Term, k)
		}
		return
	}
	t.Fatal("the active segment never ended on a record of its file's previous life")
}
