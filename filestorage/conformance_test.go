package filestorage

import (
	"testing"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/testing/storagetest"
)

// reopenable adds storagetest's Reopener capability to a Storage in a
// directory: Reopen closes it and opens the directory again.
type reopenable struct {
	*Storage
	open func() (*Storage, error)
}

func (r reopenable) Reopen() (raft.Storage, error) {
	if err := r.Storage.Close(); err != nil {
		return nil, err
	}
	s, err := r.open()
	if err != nil {
		return nil, err
	}
	return reopenable{s, r.open}, nil
}

func TestConformanceOnDisk(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) raft.Storage {
		dir := t.TempDir()
		// Small segments, so rollover and segment deletion happen.
		opts := Options{SegmentSize: 4 << 10}
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		return reopenable{s, func() (*Storage, error) { return Open(dir, opts) }}
	})
}

func TestConformanceInMemoryFS(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) raft.Storage {
		fsys := newMemFS()
		opts := Options{SegmentSize: 1 << 10}
		s, err := open(fsys, "/data", opts)
		if err != nil {
			t.Fatal(err)
		}
		return reopenable{s, func() (*Storage, error) { return open(fsys, "/data", opts) }}
	})
}
