package filestorage

import (
	"io"
	"os"
	"path/filepath"
)

// fileSystem is the file layer under Storage. The operating system's is
// used in production; tests substitute one that fails or crashes at a
// chosen operation and models what fsync makes durable.
type fileSystem interface {
	// MkdirAll creates dir and its parents.
	MkdirAll(dir string) error
	// List returns the names of the regular files in dir.
	List(dir string) ([]string, error)
	// Create creates or truncates a file for writing.
	Create(name string) (file, error)
	// OpenWrite opens an existing file for writing at chosen offsets.
	OpenWrite(name string) (file, error)
	// Open opens a file for reading.
	Open(name string) (io.ReadCloser, error)
	// ReadFile returns a file's contents.
	ReadFile(name string) ([]byte, error)
	// Size returns a file's size.
	Size(name string) (int64, error)
	Rename(oldName, newName string) error
	Remove(name string) error
	// SyncDir makes creations, renames and removals in dir durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on the file name, failing at once if
	// someone else holds it. Closing the result releases it.
	Lock(name string) (io.Closer, error)
}

// file is a file open for writing.
type file interface {
	io.Writer
	io.WriterAt
	// Sync makes the contents and metadata (size included) durable.
	Sync() error
	// SyncData makes the contents durable, and the size if it changed,
	// but may skip other metadata (fdatasync). Over a preallocated
	// region of a file it avoids a journal commit on most file systems.
	SyncData() error
	Truncate(size int64) error
	Close() error
}

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

func (osFS) List(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		if de.Type().IsRegular() {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

func (osFS) Create(name string) (file, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenWrite(name string) (file, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// osFile is an operating-system file with SyncData.
type osFile struct{ *os.File }

func (f osFile) SyncData() error { return syncData(f.File) }

func (osFS) Open(name string) (io.ReadCloser, error) { return os.Open(name) }

func (osFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

func (osFS) Size(name string) (int64, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (osFS) Rename(oldName, newName string) error { return os.Rename(oldName, newName) }

func (osFS) Remove(name string) error { return os.Remove(name) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (osFS) Lock(name string) (io.Closer, error) {
	f, err := lockFile(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}
