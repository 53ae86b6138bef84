package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/raftgo/raft"
)

// Broadcast is the ID meaning "every replica" as a destination and "no
// leader known" in the leader field.
const Broadcast = "FFFF"

// wireMsg is one JSON message of the simulator's protocol. Every message
// has src, dst, leader and type; client requests add MID, key and value;
// replica-to-replica messages of type "raft" carry encoded raft.Messages.
type wireMsg struct {
	Src    string  `json:"src"`
	Dst    string  `json:"dst"`
	Leader string  `json:"leader"`
	Type   string  `json:"type"`
	MID    string  `json:"MID,omitempty"`
	Key    string  `json:"key,omitempty"`
	Value  *string `json:"value,omitempty"`
	// Raft holds raft.Message.MarshalBinary encodings (base64 in JSON),
	// all addressed to Dst: one JSON message carries a whole batch.
	Raft [][]byte `json:"raft,omitempty"`
}

// encode returns m as compact JSON followed by a newline.
func (m *wireMsg) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// maxWireMsg bounds one incoming JSON message.
const maxWireMsg = 64 << 20

// frameReader splits a byte stream into messages ending with "}\n", the
// way the simulator does.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 256<<10)}
}

var errFrameTooLarge = errors.New("jsonreplica: message larger than 64 MiB")

// next returns the next message without its trailing newline. The slice
// is valid until the next call.
func (f *frameReader) next() ([]byte, error) {
	f.buf = f.buf[:0]
	for {
		line, err := f.r.ReadSlice('\n')
		f.buf = append(f.buf, line...)
		if len(f.buf) > maxWireMsg {
			return nil, errFrameTooLarge
		}
		switch {
		case err == nil:
			if bytes.HasSuffix(f.buf, []byte("}\n")) {
				return f.buf[:len(f.buf)-1], nil
			}
		case errors.Is(err, bufio.ErrBufferFull):
		default:
			return nil, err
		}
	}
}

// parseID turns a 4-digit hex replica ID into a raft.NodeID. Raft reserves
// NodeID 0, so replica "0000" is NodeID 1.
func parseID(s string) (raft.NodeID, error) {
	if len(s) != 4 || s == Broadcast {
		return raft.None, fmt.Errorf("replica ID %q is not 4 hex digits (FFFF is reserved)", s)
	}
	v, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return raft.None, fmt.Errorf("replica ID %q is not 4 hex digits", s)
	}
	return raft.NodeID(v + 1), nil
}

// formatID is the inverse of parseID; raft.None formats as FFFF.
func formatID(id raft.NodeID) string {
	if id == raft.None || id > 0xFFFF {
		return Broadcast
	}
	return fmt.Sprintf("%04X", uint64(id-1))
}
