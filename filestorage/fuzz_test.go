package filestorage

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/raftgo/raft"
)

// recordSeeds are encodings of every record kind.
func recordSeeds() [][]byte {
	si := snapInfo{meta: raft.SnapshotMeta{Index: 9, Term: 2, Config: raft.Configuration{Servers: []raft.Server{{ID: 1, Addr: "a:1"}, {ID: 2, Suffrage: raft.Learner}}}}, size: 100, crc: 0xdeadbeef}
	return [][]byte{
		appendEntry(nil, raft.Entry{Index: 1, Term: 1, Data: []byte("hello")}, true, 0),
		appendEntry(nil, raft.Entry{Index: 1 << 40, Term: 3, Type: raft.EntryConfig}, false, 0),
		appendHardState(nil, raft.HardState{Term: 5, Vote: 2, Commit: 4}, true, 0),
		appendCompact(nil, 7, 2, true, 0),
		appendSnapshot(nil, si, true, true, 0),
		appendCheckpoint(nil, checkpoint{seq: 3, hs: raft.HardState{Term: 1}, comp: 4, compTerm: 1, last: 8, snap: si}, true),
		appendCheckpoint(nil, checkpoint{seq: 4, last: 8, snap: si, salt: 0xfeedface, prevSalt: 7}, true),
		{},
		{1, 0, 0, 0, 0, 0, 0, 0, 2},
	}
}

// FuzzDecodeRecord checks that the record decoder never panics on
// arbitrary bytes, and that whatever it accepts re-encodes to a record
// that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
		if len(s) > 3 {
			f.Add(s[:len(s)-3])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, n, err := decodeRecord(data, 0)
		if err != nil {
			return
		}
		if n < frameHeaderSize+1 || n > len(data) {
			t.Fatalf("decoded a record of %d bytes from %d bytes", n, len(data))
		}
		again := appendRecord(nil, r, 0)
		r2, n2, err := decodeRecord(again, 0)
		if err != nil || n2 != len(again) {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if len(r.entry.Data) == 0 {
			r.entry.Data = nil
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
	})
}

// fuzzBase is a small valid storage: segment 1 (full), segment 2 and a
// snapshot, made by the start of the crash workload.
func fuzzBase(tb testing.TB) *memFS {
	fsys, s := runCrashScript(tb, 12)
	s.Close()
	return fsys
}

// runCrashScript runs the first n calls of the crash workload on a new
// storage with 400-byte segments.
func runCrashScript(tb testing.TB, n int) (*memFS, *Storage) {
	fsys := newMemFS()
	s, err := open(fsys, crashDir, Options{SegmentSize: 400})
	if err != nil {
		tb.Fatal(err)
	}
	for _, op := range crashScript()[:n] {
		if err := op.apply(s); err != nil {
			tb.Fatal(err)
		}
	}
	return fsys, s
}

// fuzzReusedBase is a storage, as a crash leaves it, whose last segment was
// written into a dead segment's file: the previous life's records follow
// its own. It returns the storage, that segment's path and its own bytes.
func fuzzReusedBase(tb testing.TB) (*memFS, string, []byte) {
	fsys, s := runCrashScript(tb, 20)
	sg := s.segs[len(s.segs)-1]
	path := s.path(segName(sg.seq))
	data := fsys.names[path].data
	body, _, _ := decodeFrame(data, 0)
	if hdr, err := decodeBody(body); err != nil || hdr.cp.prevSalt == hdr.cp.salt || sg.alloc <= sg.size {
		tb.Fatalf("the last segment does not hold a previous life (%v)", err)
	}
	return fsys.crash(loseUnsynced, nil), path, bytes.Clone(data[:sg.size])
}

// FuzzOpen puts arbitrary bytes in the last segment of a valid storage
// (and, separately, makes them the only segment, and the previous life's
// part of a last segment written into a dead one's file) and opens it.
// Open must not panic; it either fails with a *CorruptError or yields a
// storage whose state is well formed and which accepts and keeps a new
// Save.
func FuzzOpen(f *testing.F) {
	base := fuzzBase(f)
	reused, reusedSeg, reusedHead := fuzzReusedBase(f)
	f.Add(bytes.Clone(reused.names[reusedSeg].data[len(reusedHead):]))
	segs := []string{}
	for _, name := range base.files() {
		if _, ok := parseSegName(name[len(crashDir)+1:]); ok {
			segs = append(segs, name)
		}
	}
	for _, name := range segs {
		data := base.names[name].data
		f.Add(bytes.Clone(data))
		f.Add(bytes.Clone(data[:len(data)-5]))
		f.Add(append(bytes.Clone(data), 0, 0, 0, 0, 0, 0))
	}
	f.Add([]byte{})
	f.Add([]byte("not a segment at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, layout := range []string{"last", "only", "reused"} {
			fsys := base.clone()
			var victim string
			contents := bytes.Clone(data)
			switch layout {
			case "last":
				victim = segs[len(segs)-1]
			case "only":
				for _, name := range fsys.files() {
					delete(fsys.names, name)
				}
				victim = crashDir + "/" + segName(1)
			case "reused":
				fsys = reused.clone()
				victim = reusedSeg
				contents = append(bytes.Clone(reusedHead), data...)
			}
			fsys.names[victim] = &memInode{data: contents}
			s, err := open(fsys, crashDir, Options{SegmentSize: 400})
			if err != nil {
				var ce *CorruptError
				if !errors.As(err, &ce) {
					t.Fatalf("%s: open failed with %v, want a *CorruptError", layout, err)
				}
				continue
			}
			st, err := s.Load()
			if err != nil {
				t.Fatalf("%s: Load: %v", layout, err)
			}
			for i, e := range st.Entries {
				if e.Index != st.CompactedIndex+1+uint64(i) {
					t.Fatalf("%s: entry %d has index %d after compaction point %d", layout, i, e.Index, st.CompactedIndex)
				}
			}
			next := st.CompactedIndex + uint64(len(st.Entries)) + 1
			hs := raft.HardState{Term: st.HardState.Term + 1, Commit: st.HardState.Commit}
			if err := s.Save(hs, []raft.Entry{{Index: next, Term: hs.Term, Data: []byte("x")}}); err != nil {
				t.Fatalf("%s: Save after open: %v", layout, err)
			}
			s.Close()
			s, err = open(fsys, crashDir, Options{SegmentSize: 400})
			if err != nil {
				t.Fatalf("%s: reopen after Save: %v", layout, err)
			}
			st2, _ := s.Load()
			s.Close()
			if n := len(st2.Entries); st2.HardState != hs || n == 0 || st2.Entries[n-1].Index != next {
				t.Fatalf("%s: the Save after recovery was lost: %s", layout, describe(st2))
			}
		}
	})
}
