package main

import (
	"os"
	"syscall"
)

// syncData is fdatasync(2).
func syncData(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
