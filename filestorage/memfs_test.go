package filestorage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"
)

// memFS is an in-memory fileSystem that models what survives a crash:
// file contents written since the last Sync of the file, and creations,
// renames and removals since the last SyncDir, may be lost. It can fail
// (and from then on behave as a crashed machine) at a chosen operation.
type memFS struct {
	mu      sync.Mutex
	names   map[string]*memInode // the namespace now
	durable map[string]*memInode // the namespace as of the last SyncDir
	locks   map[string]bool

	ops     int        // mutating operations so far
	failAt  int        // the mutating operation that fails and crashes; 0: never
	crashed bool       // an operation failed: every later one fails
	rng     *rand.Rand // how much of a failing write lands

	writes, fileSyncs, dirSyncs int // counters for tests
	dataSyncs                   int // the fileSyncs that were SyncData
	written                     int // bytes written
}

type memInode struct {
	data   []byte // contents now
	synced []byte // contents as of the last Sync
}

var errCrashed = errors.New("memfs: injected failure (machine crashed)")

func newMemFS() *memFS {
	return &memFS{names: map[string]*memInode{}, durable: map[string]*memInode{}, locks: map[string]bool{}, rng: rand.New(rand.NewPCG(1, 2))}
}

// step counts a mutating operation and reports whether it must fail.
func (m *memFS) step() error {
	if m.crashed {
		return errCrashed
	}
	m.ops++
	if m.failAt > 0 && m.ops == m.failAt {
		m.crashed = true
		return errCrashed
	}
	return nil
}

func (m *memFS) alive() error {
	if m.crashed {
		return errCrashed
	}
	return nil
}

func (m *memFS) MkdirAll(string) error { return nil }

func (m *memFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return nil, err
	}
	var out []string
	for name := range m.names {
		if path.Dir(name) == path.Clean(dir) {
			out = append(out, path.Base(name))
		}
	}
	slices.Sort(out)
	return out, nil
}

func (m *memFS) Create(name string) (file, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.step(); err != nil {
		return nil, err
	}
	ino := &memInode{}
	m.names[name] = ino
	return &memFile{fs: m, ino: ino}, nil
}

func (m *memFS) OpenWrite(name string) (file, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return nil, err
	}
	ino, ok := m.names[name]
	if !ok {
		return nil, fmt.Errorf("memfs: open %s: file does not exist", name)
	}
	return &memFile{fs: m, ino: ino}, nil
}

func (m *memFS) Open(name string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return nil, err
	}
	ino, ok := m.names[name]
	if !ok {
		return nil, fmt.Errorf("memfs: open %s: file does not exist", name)
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(ino.data))), nil
}

func (m *memFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return nil, err
	}
	ino, ok := m.names[name]
	if !ok {
		return nil, fmt.Errorf("memfs: read %s: file does not exist", name)
	}
	return bytes.Clone(ino.data), nil
}

func (m *memFS) Size(name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return 0, err
	}
	ino, ok := m.names[name]
	if !ok {
		return 0, fmt.Errorf("memfs: stat %s: file does not exist", name)
	}
	return int64(len(ino.data)), nil
}

func (m *memFS) Rename(oldName, newName string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.step(); err != nil {
		return err
	}
	ino, ok := m.names[oldName]
	if !ok {
		return fmt.Errorf("memfs: rename %s: file does not exist", oldName)
	}
	delete(m.names, oldName)
	m.names[newName] = ino
	return nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.step(); err != nil {
		return err
	}
	if _, ok := m.names[name]; !ok {
		return fmt.Errorf("memfs: remove %s: file does not exist", name)
	}
	delete(m.names, name)
	return nil
}

func (m *memFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.step(); err != nil {
		return err
	}
	for name := range m.durable {
		if path.Dir(name) == path.Clean(dir) {
			delete(m.durable, name)
		}
	}
	for name, ino := range m.names {
		if path.Dir(name) == path.Clean(dir) {
			m.durable[name] = ino
		}
	}
	m.dirSyncs++
	return nil
}

type memLock struct {
	fs   *memFS
	name string
}

func (l memLock) Close() error {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	delete(l.fs.locks, l.name)
	return nil
}

func (m *memFS) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.alive(); err != nil {
		return nil, err
	}
	if m.locks[name] {
		return nil, fmt.Errorf("%w: %s", ErrLocked, name)
	}
	m.locks[name] = true
	if _, ok := m.names[name]; !ok {
		m.names[name] = &memInode{}
	}
	return memLock{m, name}, nil
}

type memFile struct {
	fs  *memFS
	ino *memInode
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		if f.fs.ops == f.fs.failAt {
			// A torn write: some prefix of it reaches the file.
			n := f.fs.rng.IntN(len(p) + 1)
			f.ino.data = append(f.ino.data, p[:n]...)
		}
		return 0, err
	}
	f.ino.data = append(f.ino.data, p...)
	f.fs.writes++
	f.fs.written += len(p)
	return len(p), nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		if f.fs.ops == f.fs.failAt {
			// A torn write: some prefix of it reaches the file.
			f.ino.writeAt(p[:f.fs.rng.IntN(len(p)+1)], off)
		}
		return 0, err
	}
	f.ino.writeAt(p, off)
	f.fs.writes++
	f.fs.written += len(p)
	return len(p), nil
}

// writeAt overwrites the file from off, extending it (with zeros for any
// gap) as needed.
func (ino *memInode) writeAt(p []byte, off int64) {
	if end := int(off) + len(p); end > len(ino.data) {
		ino.data = append(ino.data, make([]byte, end-len(ino.data))...)
	}
	copy(ino.data[off:], p)
}

func (f *memFile) SyncData() error {
	if err := f.Sync(); err != nil {
		return err
	}
	f.fs.mu.Lock()
	f.fs.dataSyncs++
	f.fs.mu.Unlock()
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		return err
	}
	f.ino.synced = bytes.Clone(f.ino.data)
	f.fs.fileSyncs++
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		return err
	}
	if size > int64(len(f.ino.data)) {
		return errors.New("memfs: truncate beyond the end")
	}
	f.ino.data = f.ino.data[:size:size]
	return nil
}

func (f *memFile) Close() error { return nil }

// crashModel says what happens to unsynced data at a crash.
type crashModel int

const (
	loseUnsynced   crashModel = iota // only synced data survives
	keepPrefix                       // a random prefix of unsynced appends survives, and any blocks of unsynced overwrites
	keepPrefixZero                   // ... and the rest of the file length reads as zeros
	crashModels
)

// crashBlock is the unit in which overwrites of synced data survive a
// crash or not: smaller than any disk sector, to tear records anywhere.
const crashBlock = 32

// crash returns the machine as it comes back after a power cut: the
// durable namespace, and each file's synced contents plus, depending on
// model, part of what was written after.
func (m *memFS) crash(model crashModel, rng *rand.Rand) *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := newMemFS()
	seen := map[*memInode]*memInode{}
	for name, ino := range m.durable {
		if c, ok := seen[ino]; ok {
			out.names[name], out.durable[name] = c, c
			continue
		}
		data := bytes.Clone(ino.synced)
		if model != loseUnsynced {
			if len(ino.data) >= len(ino.synced) {
				// Overwritten blocks reach the disk or not, each on its
				// own and in no order (preallocated segments are written
				// in place).
				for p := 0; p < len(data); p += crashBlock {
					end := min(p+crashBlock, len(data))
					if !bytes.Equal(data[p:end], ino.data[p:end]) && rng.IntN(2) == 0 {
						copy(data[p:end], ino.data[p:end])
					}
				}
				extra := ino.data[len(ino.synced):]
				n := rng.IntN(len(extra) + 1)
				data = append(data, extra[:n]...)
				if model == keepPrefixZero {
					data = append(data, make([]byte, len(extra)-n)...)
				}
			} else if rng.IntN(2) == 0 {
				data = bytes.Clone(ino.data) // a truncation that reached the disk
			}
		}
		c := &memInode{data: data, synced: bytes.Clone(data)}
		seen[ino] = c
		out.names[name], out.durable[name] = c, c
	}
	return out
}

// counts returns the write and sync counters.
func (m *memFS) counts() (writes, fileSyncs, dirSyncs int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes, m.fileSyncs, m.dirSyncs
}

// files lists the non-lock files, for corruption tests.
func (m *memFS) files() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.names {
		if !strings.HasSuffix(name, "/LOCK") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// clone copies the whole file system as it is now (no crash).
func (m *memFS) clone() *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := newMemFS()
	for name, ino := range m.names {
		c := &memInode{data: bytes.Clone(ino.data), synced: bytes.Clone(ino.data)}
		out.names[name], out.durable[name] = c, c
	}
	return out
}
