package rafttest

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/raftgo/raft"
)

// hashSM is the default state machine: it keeps a hash of the commands it
// applied and their count, and returns the count from Apply.
type hashSM struct {
	hash, count uint64
}

func (s *hashSM) Apply(e raft.Entry) any {
	s.hash = mix(s.hash, hashBytes(e.Data))
	s.count++
	return s.count
}

func (s *hashSM) Snapshot() (raft.Snapshot, error) {
	b := binary.BigEndian.AppendUint64(nil, s.hash)
	return byteSnapshot(binary.BigEndian.AppendUint64(b, s.count)), nil
}

func (s *hashSM) Restore(r io.Reader) error {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return errors.New("rafttest: hash state machine: short snapshot")
	}
	s.hash, s.count = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	return nil
}

// byteSnapshot is a raft.Snapshot of bytes taken at once.
type byteSnapshot []byte

func (b byteSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}

func (b byteSnapshot) Release() {}
