package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// codecCases are messages with every field set at least once, including
// extreme values.
func codecCases() []Message {
	conf := Configuration{Servers: []Server{{ID: 1, Addr: "10.0.0.1:7000"}, {ID: 1 << 62, Suffrage: Learner}}}
	return []Message{
		{Type: MsgApp, From: 1, To: 2, Term: 7, LogTerm: 6, Index: 41, Commit: 40, Entries: []Entry{
			{Index: 42, Term: 7, Type: EntryNormal, Data: []byte("put a=1")},
			{Index: 43, Term: 7, Type: EntryNoop},
			{Index: 44, Term: 7, Type: EntryConfig, Data: EncodeConfiguration(conf)},
			{Index: 45, Term: 7, Data: bytes.Repeat([]byte{0}, 1000)},
		}},
		{Type: MsgAppResp, From: 2, To: 1, Term: 7, Index: 41, Reject: true, RejectHint: 30, LogTerm: 5},
		{Type: MsgVote, From: 3, To: 1, Term: 1<<64 - 1, Index: 1<<64 - 1, LogTerm: 1<<63 + 5, Context: 1},
		{Type: MsgPreVoteResp, From: 1, To: 3, Term: 2, Reject: true},
		{Type: MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 9, Context: 12345},
		{Type: MsgSnap, From: 1, To: 2, Term: 9, Snapshot: SnapshotMeta{Index: 100, Term: 8, Config: conf},
			SnapshotOffset: 1 << 33, SnapshotData: []byte("chunk"), SnapshotDone: true},
		{Type: MsgSnapAck, From: 2, To: 1, Term: 9, SnapshotOffset: 77, Reject: true},
		{Type: MsgTimeoutNow, From: 1, To: 2, Term: 4},
		{Type: MsgReadIndex, From: 2, To: 1, Term: 4, Context: 8},
		{Type: MsgReadIndexResp, From: 1, To: 2, Term: 4, Index: 50, Context: 8},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range codecCases() {
		t.Run(m.Type.String(), func(t *testing.T) {
			data, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Message
			if err := got.UnmarshalBinary(data); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", got, m)
			}
			// The decoded message does not alias the input buffer.
			for i := range data {
				data[i] ^= 0xff
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatal("decoded message aliases the encoded bytes")
			}
			// AppendBinary appends after existing bytes.
			prefix := []byte("xyz")
			out, _ := m.AppendBinary(prefix)
			if !bytes.Equal(out[:3], []byte("xyz")) {
				t.Fatal("AppendBinary clobbered the prefix")
			}
		})
	}
}

func TestMessageDecodeRejectsCorruptInput(t *testing.T) {
	m := codecCases()[0]
	good, _ := m.MarshalBinary()
	// Every strict prefix is an error wrapping ErrCorrupt.
	for n := range len(good) {
		var got Message
		if err := got.UnmarshalBinary(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: %v, want ErrCorrupt", n, len(good), err)
		}
	}
	huge := binary.AppendUvarint(nil, 1<<60)
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{9}, good[1:]...)},
		{"unknown type", append([]byte{messageVersion, byte(msgTypeEnd)}, good[2:]...)},
		{"type zero", append([]byte{messageVersion, 0}, good[2:]...)},
		{"trailing bytes", append(bytes.Clone(good), 0)},
		{"entry count larger than input", append(append([]byte{messageVersion, byte(MsgApp), 1, 2, 3, 4, 5, 6, 0, 0, 0}, huge...), 0)},
		{"overlong varint", append([]byte{messageVersion, byte(MsgApp)}, bytes.Repeat([]byte{0xff}, 11)...)},
	}
	for _, c := range cases {
		var got Message
		got.Term = 99
		err := got.UnmarshalBinary(c.data)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
		if got.Term != 99 {
			t.Errorf("%s: a failed decode changed the message", c.name)
		}
	}
}

func TestConfigurationCodec(t *testing.T) {
	conf := Configuration{Servers: []Server{{ID: 3, Addr: "h:1"}, {ID: 1}, {ID: 2, Suffrage: Learner, Addr: "ünïcode"}}}
	got, err := DecodeConfiguration(EncodeConfiguration(conf))
	if err != nil || !reflect.DeepEqual(got, conf) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	if got, err := DecodeConfiguration(EncodeConfiguration(Configuration{})); err != nil || len(got.Servers) != 0 {
		t.Fatalf("empty configuration: %+v, %v", got, err)
	}
	dup := EncodeConfiguration(Configuration{Servers: []Server{{ID: 1}, {ID: 1}}})
	if _, err := DecodeConfiguration(dup); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("duplicate IDs decoded: %v", err)
	}
	enc := EncodeConfiguration(conf)
	for n := range len(enc) {
		if _, err := DecodeConfiguration(enc[:n]); err == nil && n > 0 {
			t.Fatalf("prefix %d of a configuration decoded", n)
		}
	}
}
