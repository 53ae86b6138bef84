//go:build unix

package tcptransport

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// rawSocket returns c's socket for direct writes, or nil if c has none.
func rawSocket(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// socketWriter makes one non-blocking write(2) on a socket. It keeps its
// callback so that a write allocates nothing.
type socketWriter struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// write writes a prefix of b, as much as the socket buffer takes now
// (possibly nothing), and returns its length.
func (w *socketWriter) write(raw syscall.RawConn, b []byte) (int, error) {
	if w.fn == nil {
		w.fn = func(fd uintptr) bool {
			w.n, w.err = syscall.Write(int(fd), w.b)
			return true
		}
	}
	w.b = b
	err := raw.Write(w.fn)
	w.b = nil
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Only the peer's goroutine renews the write deadline; after a
		// quiet spell it has passed. That goroutine writes b instead.
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := max(w.n, 0), w.err
	if err == syscall.EAGAIN || err == syscall.EINTR {
		err = nil
	}
	return n, err
}
