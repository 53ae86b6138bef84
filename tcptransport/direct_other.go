//go:build !unix

package tcptransport

import (
	"errors"
	"net"
	"syscall"
)

// rawSocket returns nil: direct writes are used on Unix systems only.
func rawSocket(net.Conn) syscall.RawConn { return nil }

type socketWriter struct{}

func (socketWriter) write(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("tcptransport: direct writes are not supported here")
}
