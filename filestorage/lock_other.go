//go:build !unix

package filestorage

import "os"

// lockFile creates name but takes no lock: on this platform nothing stops
// two processes opening the same directory, so do not.
func lockFile(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
}
