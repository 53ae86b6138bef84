// Package filestorage is a durable raft.Storage: log entries, hard state
// and snapshot metadata go to append-only, checksummed segment files;
// snapshots go to files of their own. It uses only the standard library.
//
// Every Save is one write and one sync, however many entries it holds
// (group commit). Segments are filled with zeros ahead of the log, or
// written into the files of dead segments, so most Saves overwrite
// allocated blocks and need only fdatasync, not a journal commit for a
// changed file size. Recovery on Open cuts a torn tail off the
// last segment and refuses to start, with a *CorruptError naming the file
// and offset, on any other damage. A lock file keeps a second process (or a second Open
// in this one) out of the directory.
//
// The on-disk format, what is synced when, and the recovery rules are
// described in docs/storage.md.
package filestorage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"

	"github.com/raftgo/raft"
)

// ErrLocked is returned by Open when another process, or another open
// Storage in this process, holds the directory.
var ErrLocked = errors.New("filestorage: directory is locked")

// ErrClosed is returned by every method of a closed Storage.
var ErrClosed = errors.New("filestorage: storage is closed")

// DefaultSegmentSize is the segment size used when Options.SegmentSize is
// zero.
const DefaultSegmentSize = 64 << 20

// Options tunes a Storage. The zero value gives the defaults.
type Options struct {
	// SegmentSize is the size past which the current segment is closed
	// and a new one started; old segments are deleted once compaction
	// has passed every entry in them, except for two kept (as .free
	// files) for new segments to be written into. Zero means
	// DefaultSegmentSize.
	SegmentSize int64

	// Preallocate is how many bytes of zeros are written ahead of the log
	// at a time. Writing into zeroed blocks lets a Save sync its data
	// without a file-system journal commit (measured 1.5-2x more syncs per
	// second on ext4); the cost is writing each byte of the log twice.
	// While Saves average 32 KiB or more, where that trade no longer
	// pays, the log is extended without zeros. Zero means the smaller of
	// 4 MiB and SegmentSize; a negative value turns preallocation off
	// (every Save then extends the file), and with it the reuse of dead
	// segments' files, which on a copy-on-write file system gains nothing
	// and holds their space.
	Preallocate int64
}

// largeWrite is the mean write size from which the log is extended
// without zeros. Zeros spare a small write a journal commit; a large one
// costs about the same either way, so writing every byte twice then only
// halves the disk's bandwidth. Measured in the benchmark's durable
// variant: 10 KiB writes were 19% faster with zeros, 66 KiB writes 18%
// faster and 245 KiB writes 38% faster without.
const largeWrite = 32 << 10

// DefaultPreallocate is the preallocation step used when
// Options.Preallocate is zero and the segments are at least this large.
const DefaultPreallocate = 4 << 20

// Storage is a raft.Storage kept in a directory. It is safe for concurrent
// use. Open it with Open and release it with Close.
type Storage struct {
	fs   fileSystem
	dir  string
	opts Options
	lock io.Closer

	snapMu sync.Mutex // serializes SaveSnapshot calls (held before mu)

	mu        sync.Mutex // guards everything below
	closed    bool
	failed    error // set when a write or sync failed: nothing is known any more
	hs        raft.HardState
	snap      snapInfo
	comp      uint64
	compTerm  uint64
	last      uint64
	terms     termIndex
	segs      []*segment // in sequence order; the last is the active one
	active    file
	buf       []byte      // encoding buffer, reused
	writeAvg8 int64       // 8x the moving average of the bytes per commit
	cached    *raft.State // what recovery read, for the first Load
	rm        *remover    // deletes dead segments
}

var _ raft.Storage = (*Storage)(nil)

// Open opens (creating if needed) the storage in dir and recovers it. It
// returns a *CorruptError if the files are damaged anywhere but at the
// torn tail of the last segment, and ErrLocked if the directory is in use.
func Open(dir string, opts Options) (*Storage, error) {
	s, err := open(osFS{}, dir, opts)
	if err == nil {
		s.rm.async = true
	}
	return s, err
}

func open(fsys fileSystem, dir string, opts Options) (*Storage, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.Preallocate == 0 {
		opts.Preallocate = min(DefaultPreallocate, opts.SegmentSize)
	}
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("filestorage: creating %s: %w", dir, err)
	}
	lock, err := fsys.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("filestorage: locking %s: %w", dir, err)
	}
	maxFree := defaultMaxFree
	if opts.Preallocate < 0 {
		maxFree = 0
	}
	s := &Storage{fs: fsys, dir: dir, opts: opts, lock: lock, rm: newRemover(fsys, dir, maxFree)}
	if err := s.recover(); err != nil {
		if s.active != nil {
			s.active.Close()
		}
		lock.Close()
		return nil, err
	}
	return s, nil
}

func (s *Storage) path(name string) string { return filepath.Join(s.dir, name) }

// recover reads the directory and brings the Storage to the last durable
// state, cutting a torn tail and removing leftovers of interrupted work.
func (s *Storage) recover() error {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return fmt.Errorf("filestorage: listing %s: %w", s.dir, err)
	}
	var seqs []uint64
	var snaps []string
	for _, name := range names {
		switch {
		case filepath.Ext(name) == ".tmp":
			// An interrupted segment creation or snapshot write.
			if err := s.fs.Remove(s.path(name)); err != nil {
				return fmt.Errorf("filestorage: removing leftover %s: %w", name, err)
			}
		case isSnapName(name):
			snaps = append(snaps, name)
		case filepath.Ext(name) == ".free":
			// A dead segment kept for reuse: kept again, or deleted if
			// there are enough. A name not of ours is left alone.
			salt, ok := parseFreeName(name)
			if ok && len(s.rm.free) < s.rm.maxFree {
				s.rm.addFree(deadFile{s.path(name), salt})
			} else if ok {
				if err := s.fs.Remove(s.path(name)); err != nil {
					return fmt.Errorf("filestorage: removing leftover %s: %w", name, err)
				}
			}
		default:
			if seq, ok := parseSegName(name); ok {
				seqs = append(seqs, seq)
			}
		}
	}
	slices.Sort(seqs)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return &CorruptError{File: s.path(segName(seqs[i-1] + 1)), Offset: 0,
				Reason: fmt.Sprintf("segment is missing (found %s and %s)", segName(seqs[i-1]), segName(seqs[i]))}
		}
	}
	if len(seqs) == 0 {
		if len(snaps) > 0 {
			return &CorruptError{File: s.path(snaps[0]), Offset: 0, Reason: "snapshot file without any log segment: the log was deleted"}
		}
		sg, err := s.createSegment(1)
		if err != nil {
			return err
		}
		s.segs = []*segment{sg}
		s.cached = &raft.State{}
		return s.openActive(-1)
	}
	st, cut, err := replay(s.fs, s.dir, seqs)
	if err != nil {
		return err
	}
	s.hs, s.snap, s.comp, s.compTerm, s.last, s.segs = st.hs, st.snap, st.comp, st.compTerm, st.last, st.segs
	for _, e := range st.ents {
		s.terms.add(e.Index, e.Term)
	}
	if st.snap.meta.Index > 0 {
		name := snapName(st.snap.meta.Index, st.snap.meta.Term)
		size, err := s.fs.Size(s.path(name))
		if err != nil {
			return &CorruptError{File: s.path(name), Offset: 0, Reason: fmt.Sprintf("snapshot file named by the log cannot be read: %v", err)}
		}
		if size != st.snap.size {
			return &CorruptError{File: s.path(name), Offset: min(size, st.snap.size), Reason: fmt.Sprintf("snapshot file has %d bytes, the log says %d", size, st.snap.size)}
		}
	}
	for _, name := range snaps {
		if st.snap.meta.Index == 0 || name != snapName(st.snap.meta.Index, st.snap.meta.Term) {
			// A snapshot replaced, or written but never recorded.
			if err := s.fs.Remove(s.path(name)); err != nil {
				return fmt.Errorf("filestorage: removing stale snapshot %s: %w", name, err)
			}
		}
	}
	s.cached = &raft.State{
		HardState:      st.hs,
		Snapshot:       st.snap.meta,
		CompactedIndex: st.comp,
		CompactedTerm:  st.compTerm,
		Entries:        st.ents,
	}
	return s.openActive(cut)
}

// openActive opens the last segment for appending, first cutting it back
// to cut bytes if cut >= 0.
func (s *Storage) openActive(cut int64) error {
	sg := s.segs[len(s.segs)-1]
	f, err := s.fs.OpenWrite(s.path(segName(sg.seq)))
	if err != nil {
		return fmt.Errorf("filestorage: opening segment: %w", err)
	}
	s.active = f
	if cut >= 0 {
		sg.alloc = cut
		if err := f.Truncate(cut); err != nil {
			return fmt.Errorf("filestorage: cutting the torn tail of %s: %w", segName(sg.seq), err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("filestorage: syncing %s: %w", segName(sg.seq), err)
		}
	}
	return nil
}

// createSegment writes a new segment holding only a checkpoint of the
// current state, in the file of a dead segment if the remover kept one
// (its blocks are allocated and written, so a Save over them syncs without
// a journal commit, as over preallocated zeros), otherwise in a new file
// followed by the first preallocated zeros. Either way under a temporary
// name, synced, then renamed into place and the directory synced, so a
// segment is never seen half-created. It leaves the segment's header in
// s.buf and returns the segment.
func (s *Storage) createSegment(seq uint64) (*segment, error) {
	name := s.path(segName(seq))
	free, recycled := s.rm.takeFree()
	salt := newSalt(free.salt)
	prev := salt // a new file holds nothing else
	if recycled {
		prev = free.salt
	}
	s.buf = appendCheckpoint(s.buf[:0], checkpoint{seq: seq, hs: s.hs, comp: s.comp, compTerm: s.compTerm, last: s.last, snap: s.snap, salt: salt, prevSalt: prev}, true)
	var (
		f    file
		size = int64(len(s.buf))
		err  error
	)
	if recycled {
		err = s.fs.Rename(free.path, name+".tmp")
		if err == nil {
			f, err = s.fs.OpenWrite(name + ".tmp")
		}
		if err == nil {
			var n int64
			if n, err = s.fs.Size(name + ".tmp"); n > size {
				size = n
			}
		}
		if err == nil {
			_, err = f.WriteAt(s.buf, 0)
		}
	} else {
		f, err = s.fs.Create(name + ".tmp")
		if err == nil {
			_, err = f.Write(s.buf)
		}
		if err == nil && s.zeroAhead() {
			err = writeZeros(f, size, s.opts.Preallocate)
			size += s.opts.Preallocate
		}
	}
	if f != nil {
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = s.fs.Rename(name+".tmp", name)
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("filestorage: creating segment %s: %w", segName(seq), err)
	}
	return &segment{seq: seq, size: int64(len(s.buf)), alloc: size, salt: salt}, nil
}

// newSalt returns a random salt other than not.
func newSalt(not uint32) uint32 {
	for {
		if salt := rand.Uint32(); salt != not {
			return salt
		}
	}
}

// salt returns the salt of the active segment's records.
func (s *Storage) salt() uint32 { return s.segs[len(s.segs)-1].salt }

// zeroAhead reports whether the log should be extended with zeros ahead
// of it: yes while writes are small, so that their syncs find the blocks
// allocated and need no journal commit; no once they average largeWrite
// or more, when writing every byte twice costs more than that saves. The
// same rule holds for a new segment, which would otherwise start with
// Preallocate bytes of zeros written and synced on the write path.
func (s *Storage) zeroAhead() bool {
	return s.opts.Preallocate > 0 && s.writeAvg8/8 < largeWrite
}

// zeros is a source of zero bytes for preallocation.
var zeros [64 << 10]byte

// writeZeros writes n zero bytes to f at offset off.
func writeZeros(f file, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// rollover closes the active segment and starts the next one.
func (s *Storage) rollover() error {
	old := s.segs[len(s.segs)-1]
	// Give back what the old segment holds past its records: preallocated
	// zeros, or a previous life's records. It is synced before the next
	// segment exists: recovery accepts an end of a segment other than the
	// last only at the end of the file or before zeros.
	if old.alloc > old.size {
		if err := s.active.Truncate(old.size); err != nil {
			return fmt.Errorf("filestorage: trimming segment %s: %w", segName(old.seq), err)
		}
		if err := s.active.Sync(); err != nil {
			return fmt.Errorf("filestorage: syncing segment %s: %w", segName(old.seq), err)
		}
		old.alloc = old.size
	}
	sg, err := s.createSegment(old.seq + 1)
	if err != nil {
		return err
	}
	if err := s.active.Close(); err != nil {
		return fmt.Errorf("filestorage: closing segment: %w", err)
	}
	s.active = nil
	s.segs = append(s.segs, sg)
	if err := s.openActive(-1); err != nil {
		return err
	}
	// A segment that cannot be removed now is retried at the next
	// compaction; it costs disk space, not correctness.
	_ = s.removeDeadSegments()
	return nil
}

// removeDeadSegments deletes the oldest segments while every entry in them
// is compacted or overwritten. Everything else they held is in a later
// segment's checkpoint. The deletions are queued to the remover and done
// in that order, each synced; it returns the error of the last failed
// deletion, which is retried.
func (s *Storage) removeDeadSegments() error {
	for len(s.segs) > 1 && s.segs[0].maxLive <= s.comp {
		s.rm.add(s.path(segName(s.segs[0].seq)), s.segs[0].salt)
		s.segs = s.segs[1:]
	}
	if err := s.rm.kick(); err != nil {
		return fmt.Errorf("filestorage: deleting an old segment failed (retried at the next compaction): %w", err)
	}
	return nil
}

// usable returns the error every method returns once the Storage is closed
// or has failed.
func (s *Storage) usable() error {
	if s.closed {
		return ErrClosed
	}
	return s.failed
}

// commit writes s.buf to the active segment after its last record and
// syncs it. Inside the preallocated zeros that is a data-only sync; past
// them the file is extended, by another preallocation step of zeros in the
// same write unless writes have lately been large (see largeWrite), and
// fully synced. A failure is permanent: after a failed write or sync the
// file's contents are unknown (and a retried sync may report success for
// lost data), so the Storage refuses further use until it is reopened and
// recovered.
func (s *Storage) commit() error {
	sg := s.segs[len(s.segs)-1]
	end := sg.size + int64(len(s.buf))
	s.writeAvg8 += int64(len(s.buf)) - s.writeAvg8/8
	_, err := s.active.WriteAt(s.buf, sg.size)
	grow := end > sg.alloc
	if err == nil && grow {
		sg.alloc = end
		if s.zeroAhead() {
			err = writeZeros(s.active, end, s.opts.Preallocate)
			sg.alloc += s.opts.Preallocate
		}
	}
	if err != nil {
		s.failed = fmt.Errorf("filestorage: writing %s failed; reopen the storage to recover: %w", segName(sg.seq), err)
		return s.failed
	}
	if grow {
		err = s.active.Sync()
	} else {
		err = s.active.SyncData()
	}
	if err != nil {
		s.failed = fmt.Errorf("filestorage: syncing %s failed; reopen the storage to recover: %w", segName(sg.seq), err)
		return s.failed
	}
	sg.size += int64(len(s.buf))
	return nil
}

// maybeRollover starts a new segment if the active one is full.
func (s *Storage) maybeRollover() error {
	if s.segs[len(s.segs)-1].size < s.opts.SegmentSize {
		return nil
	}
	if err := s.rollover(); err != nil {
		s.failed = err
		return err
	}
	return nil
}

// Load implements raft.Storage. The first call returns what Open
// recovered; later calls read the segments again.
func (s *Storage) Load() (raft.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return raft.State{}, err
	}
	if s.cached != nil {
		st := *s.cached
		s.cached = nil
		return st, nil
	}
	seqs := make([]uint64, len(s.segs))
	for i, sg := range s.segs {
		seqs[i] = sg.seq
	}
	st, _, err := replay(s.fs, s.dir, seqs)
	if err != nil {
		return raft.State{}, err
	}
	if st.last != s.last || st.comp != s.comp || st.hs != s.hs {
		return raft.State{}, fmt.Errorf("filestorage: segments in %s changed under the open storage (last index %d on disk, %d in memory)", s.dir, st.last, s.last)
	}
	return raft.State{
		HardState:      st.hs,
		Snapshot:       cloneMeta(st.snap.meta),
		CompactedIndex: st.comp,
		CompactedTerm:  st.compTerm,
		Entries:        st.ents,
	}, nil
}

func cloneMeta(m raft.SnapshotMeta) raft.SnapshotMeta {
	m.Config = m.Config.Clone()
	return m
}

// Save implements raft.Storage: the hard state (if it changed) and the
// entries are written as one batch with one fsync.
func (s *Storage) Save(hs raft.HardState, entries []raft.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if len(entries) > 0 {
		first := entries[0].Index
		if first <= s.comp {
			return fmt.Errorf("filestorage: append at index %d is at or before the compaction point %d: %w", first, s.comp, raft.ErrCompacted)
		}
		if first > s.last+1 {
			return fmt.Errorf("filestorage: append at index %d leaves a gap after last index %d", first, s.last)
		}
		for i := range entries {
			if i > 0 && entries[i].Index != entries[i-1].Index+1 {
				return fmt.Errorf("filestorage: entries are not consecutive at index %d", entries[i].Index)
			}
			if len(entries[i].Data) > maxRecordSize-64 {
				return fmt.Errorf("filestorage: entry %d has %d bytes of data, more than the limit of %d", entries[i].Index, len(entries[i].Data), maxRecordSize-64)
			}
		}
	}
	if len(entries) == 0 && hs == s.hs {
		return nil
	}
	if err := s.maybeRollover(); err != nil {
		return err
	}
	s.cached = nil
	s.buf = s.buf[:0]
	salt := s.salt()
	if hs != s.hs {
		s.buf = appendHardState(s.buf, hs, len(entries) == 0, salt)
	}
	for i := range entries {
		s.buf = appendEntry(s.buf, entries[i], i == len(entries)-1, salt)
	}
	if err := s.commit(); err != nil {
		return err
	}
	s.hs = hs
	if len(entries) > 0 {
		first := entries[0].Index
		if first <= s.last {
			s.terms.truncate(first)
			for _, sg := range s.segs {
				sg.maxLive = min(sg.maxLive, first-1)
			}
		}
		for i := range entries {
			s.terms.add(entries[i].Index, entries[i].Term)
		}
		s.last = entries[len(entries)-1].Index
		s.segs[len(s.segs)-1].maxLive = s.last
	}
	if s.buf = s.buf[:0]; cap(s.buf) > 4<<20 {
		s.buf = nil // do not keep a huge batch's buffer
	}
	return nil
}

// term returns the term of entry i if it is the compaction point or stored.
func (s *Storage) term(i uint64) (uint64, bool) {
	if i == s.comp {
		return s.compTerm, true
	}
	return s.terms.at(i)
}

// Compact implements raft.Storage. The compaction is synced before any
// segment is deleted; segments whose entries are all compacted are
// deleted, the active one excepted, on a background goroutine (Close
// waits for it). A failed deletion is retried at the next Compact, which
// returns its error (the compaction itself is then done and durable).
func (s *Storage) Compact(index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if index <= s.comp {
		return nil
	}
	if index > s.last {
		return fmt.Errorf("filestorage: compact to %d beyond last index %d", index, s.last)
	}
	if index > s.snap.meta.Index {
		return fmt.Errorf("filestorage: compact to %d beyond snapshot index %d", index, s.snap.meta.Index)
	}
	term, ok := s.term(index)
	if !ok {
		return fmt.Errorf("filestorage: internal error: no term for index %d", index)
	}
	if err := s.maybeRollover(); err != nil {
		return err
	}
	s.cached = nil
	s.buf = appendCompact(s.buf[:0], index, term, true, s.salt())
	if err := s.commit(); err != nil {
		return err
	}
	s.comp, s.compTerm = index, term
	s.terms.compact(index)
	return s.removeDeadSegments()
}

// SaveSnapshot implements raft.Storage. The bytes go to a new snapshot file
// (written to a temporary name, synced, renamed, directory synced); the
// snapshot becomes current when its record in the log is synced, and the
// previous snapshot file is then deleted. Save may run meanwhile: the
// Storage is locked only for the final record.
func (s *Storage) SaveSnapshot(meta raft.SnapshotMeta, r io.Reader) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	err := s.usable()
	prev := s.snap.meta.Index
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if meta.Index == 0 {
		return errors.New("filestorage: snapshot index must be positive")
	}
	if prev > 0 && meta.Index <= prev {
		return fmt.Errorf("filestorage: snapshot at index %d is not newer than stored snapshot at %d", meta.Index, prev)
	}
	name := snapName(meta.Index, meta.Term)
	size, crc, err := s.writeSnapshotFile(name, r)
	if err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.maybeRollover(); err != nil {
		return err
	}
	s.cached = nil
	info := snapInfo{meta: cloneMeta(meta), size: size, crc: crc}
	t, ok := s.term(meta.Index)
	discard := !ok || t != meta.Term
	s.buf = appendSnapshot(s.buf[:0], info, discard, true, s.salt())
	if err := s.commit(); err != nil {
		return err
	}
	old := s.snap
	s.snap = info
	if discard {
		s.comp, s.compTerm, s.last = meta.Index, meta.Term, meta.Index
		s.terms = termIndex{}
		for _, sg := range s.segs {
			sg.maxLive = 0
		}
	}
	if old.meta.Index > 0 {
		if oldName := snapName(old.meta.Index, old.meta.Term); oldName != name {
			// Failing to remove it is harmless: Open removes stale
			// snapshot files.
			_ = s.fs.Remove(s.path(oldName))
		}
	}
	if discard {
		// The snapshot is in force; a failed deletion is retried later
		// and must not fail it.
		_ = s.removeDeadSegments()
	}
	return nil
}

// writeSnapshotFile copies r into the snapshot file name, durably, and
// returns its size and CRC-32C.
func (s *Storage) writeSnapshotFile(name string, r io.Reader) (int64, uint32, error) {
	tmp := s.path(name + ".tmp")
	f, err := s.fs.Create(tmp)
	if err != nil {
		return 0, 0, fmt.Errorf("filestorage: creating snapshot file: %w", err)
	}
	h := crc32.New(crcTable)
	size, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		err = fmt.Errorf("filestorage: writing snapshot %s: %w", name, err)
	}
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("filestorage: syncing snapshot %s: %w", name, err)
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("filestorage: closing snapshot %s: %w", name, cerr)
	}
	if err == nil {
		if err = s.fs.Rename(tmp, s.path(name)); err != nil {
			err = fmt.Errorf("filestorage: renaming snapshot %s: %w", name, err)
		}
	}
	if err == nil {
		if err = s.fs.SyncDir(s.dir); err != nil {
			err = fmt.Errorf("filestorage: syncing %s: %w", s.dir, err)
		}
	}
	if err != nil {
		_ = s.fs.Remove(tmp)
		return 0, 0, err
	}
	return size, h.Sum32(), nil
}

// Snapshot implements raft.Storage. The reader checks the snapshot's size
// and checksum as it reaches the end, and returns an error instead of
// io.EOF if they do not match what was saved.
func (s *Storage) Snapshot() (raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return raft.SnapshotMeta{}, nil, err
	}
	if s.snap.meta.Index == 0 {
		return raft.SnapshotMeta{}, nil, raft.ErrNoSnapshot
	}
	// Opened under the lock, so SaveSnapshot cannot delete the file
	// first; an open file stays readable after it is deleted.
	name := s.path(snapName(s.snap.meta.Index, s.snap.meta.Term))
	f, err := s.fs.Open(name)
	if err != nil {
		return raft.SnapshotMeta{}, nil, fmt.Errorf("filestorage: opening snapshot: %w", err)
	}
	return cloneMeta(s.snap.meta), &snapReader{f: f, name: name, want: s.snap.size, wantCRC: s.snap.crc, h: crc32.New(crcTable)}, nil
}

// snapReader reads a snapshot file and verifies it at the end.
type snapReader struct {
	f       io.ReadCloser
	name    string
	want    int64
	wantCRC uint32
	n       int64
	h       interface {
		io.Writer
		Sum32() uint32
	}
	err error
}

func (r *snapReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	// Never read past the recorded size, so extra bytes are noticed.
	if rem := r.want - r.n; int64(len(p)) > rem+1 {
		p = p[:rem+1]
	}
	n, err := r.f.Read(p)
	r.n += int64(n)
	r.h.Write(p[:n])
	switch {
	case r.n > r.want:
		r.err = &CorruptError{File: r.name, Offset: r.want, Reason: "snapshot file is longer than recorded"}
		return 0, r.err
	case err == io.EOF:
		if r.n != r.want {
			r.err = &CorruptError{File: r.name, Offset: r.n, Reason: fmt.Sprintf("snapshot file ends early (want %d bytes)", r.want)}
		} else if r.h.Sum32() != r.wantCRC {
			r.err = &CorruptError{File: r.name, Offset: 0, Reason: "snapshot checksum mismatch"}
		} else {
			r.err = io.EOF
		}
		if r.err != io.EOF {
			return 0, r.err
		}
		return n, io.EOF
	case err != nil:
		r.err = err
		return n, err
	}
	return n, nil
}

func (r *snapReader) Close() error { return r.f.Close() }

// Close releases the directory lock and the open files. Further calls
// return ErrClosed; closing twice returns nil.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.rm.wait()
	var err error
	if s.active != nil {
		// Cut what the file holds past the records (zeros, or a previous
		// life's records), so that the next Open finds the end at the
		// file's end instead of searching the rest for a torn batch. A
		// storage that failed is left as it is, for recovery.
		if sg := s.segs[len(s.segs)-1]; s.failed == nil && sg.alloc > sg.size {
			if err = s.active.Truncate(sg.size); err == nil {
				err = s.active.Sync()
			}
		}
		if cerr := s.active.Close(); err == nil {
			err = cerr
		}
	}
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// Dir returns the directory the Storage keeps its files in.
func (s *Storage) Dir() string { return s.dir }

// segmentCount reports how many segment files exist (for tests).
func (s *Storage) segmentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.segs)
}
