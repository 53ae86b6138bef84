package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/raftgo/raft"
)

func TestIDMapping(t *testing.T) {
	for _, s := range []string{"0000", "0001", "00AB", "FFFE"} {
		id, err := parseID(s)
		if err != nil || id == raft.None || formatID(id) != s {
			t.Errorf("%s -> %d (%v) -> %s", s, id, err, formatID(id))
		}
	}
	for _, s := range []string{"", "000", "00000", "FFFF", "zzzz", "-001"} {
		if _, err := parseID(s); err == nil {
			t.Errorf("parseID(%q) accepted a bad ID", s)
		}
	}
	if formatID(raft.None) != Broadcast {
		t.Errorf("no leader must format as %s", Broadcast)
	}
}

func TestFramesSplitOnBraceNewline(t *testing.T) {
	value := "line1\nline2}\n{x"
	a, _ := (&wireMsg{Src: "0000", Dst: "0001", Leader: Broadcast, Type: "put", MID: "m1", Key: "k", Value: &value}).encode()
	b, _ := (&wireMsg{Src: "0001", Dst: "0000", Leader: "0001", Type: "raft", Raft: [][]byte{bytes.Repeat([]byte{0xFF}, 300000)}}).encode()
	if bytes.Count(a, []byte("\n")) != 1 || !bytes.HasSuffix(a, []byte("}\n")) {
		t.Fatalf("encoding is not one compact line: %q", a)
	}
	fr := newFrameReader(io.MultiReader(bytes.NewReader(a), bytes.NewReader(b)))
	var got []wireMsg
	for {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var m wireMsg
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatalf("frame %q: %v", f[:min(len(f), 80)], err)
		}
		got = append(got, m)
	}
	if len(got) != 2 || *got[0].Value != value || len(got[1].Raft[0]) != 300000 {
		t.Fatalf("got %d frames", len(got))
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	for _, args := range [][]string{nil, {"XYZ"}, {"0000", "0001", "0001"}, {"0000", "FFFF"}} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) = %v, want an error", args, err)
		}
	}
}
