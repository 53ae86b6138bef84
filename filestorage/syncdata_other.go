//go:build !linux

package filestorage

import "os"

// syncData falls back to a full sync where fdatasync is not available.
func syncData(f *os.File) error { return f.Sync() }
