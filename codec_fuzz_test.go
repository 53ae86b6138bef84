package raft

import (
	"bytes"
	"errors"
	"reflect"
	"runtime/metrics"
	"testing"
	"unsafe"
)

// codecSeedMessages are well-formed messages of every shape the protocol
// sends; they seed the fuzzers.
func codecSeedMessages() []Message {
	return []Message{
		{Type: MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 9, Context: 4},
		{Type: MsgHeartbeatResp, From: 2, To: 1, Term: 3, Context: 4},
		{Type: MsgVote, From: 1, To: 3, Term: 7, LogTerm: 6, Index: 100, Context: 1},
		{Type: MsgPreVoteResp, From: 3, To: 1, Term: 8, Reject: true},
		{Type: MsgAppResp, From: 2, To: 1, Term: 5, Index: 10, Reject: true, RejectHint: 4, LogTerm: 2},
		{Type: MsgApp, From: 1, To: 2, Term: 5, LogTerm: 4, Index: 10, Commit: 9, Entries: []Entry{
			{Index: 11, Term: 5, Type: EntryNormal, Data: []byte("set x=1")},
			{Index: 12, Term: 5, Type: EntryNormal},
			{Index: 13, Term: 5, Type: EntryConfig, Data: EncodeConfiguration(Configuration{Servers: []Server{{ID: 1, Addr: "a:1"}, {ID: 2, Suffrage: Learner}}})},
		}},
		{Type: MsgSnap, From: 1, To: 3, Term: 9, SnapshotOffset: 4096, SnapshotDone: true, SnapshotData: bytes.Repeat([]byte{0xab}, 300),
			Snapshot: SnapshotMeta{Index: 50, Term: 8, Config: Configuration{Servers: []Server{{ID: 1, Addr: "127.0.0.1:7001"}, {ID: 3, Addr: "127.0.0.1:7003"}}}}},
		{Type: MsgSnapAck, From: 3, To: 1, Term: 9, SnapshotOffset: 1 << 40},
		{Type: MsgReadIndexResp, From: 1, To: 2, Term: 2, Index: 1<<64 - 1, Context: 1<<64 - 1},
	}
}

// retainedBytes is the memory a decoded Message holds through its slices
// (capacity, not length, so over-allocation shows).
func retainedBytes(m *Message) int {
	n := cap(m.Entries)*int(unsafe.Sizeof(Entry{})) + cap(m.SnapshotData)
	seen := map[*byte]bool{} // entry data shares one backing array
	for _, e := range m.Entries {
		if cap(e.Data) > 0 {
			p := unsafe.SliceData(e.Data[:cap(e.Data)])
			if !seen[p] {
				seen[p] = true
				n += cap(e.Data)
			}
		}
	}
	n += cap(m.Snapshot.Config.Servers) * int(unsafe.Sizeof(Server{}))
	for _, s := range m.Snapshot.Config.Servers {
		n += len(s.Addr)
	}
	return n
}

// heapAllocBytes reads the cumulative bytes allocated on the heap without
// stopping the world (runtime.ReadMemStats would make fuzzing crawl).
func heapAllocBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// minDecodeAlloc measures the heap bytes one UnmarshalBinary of data
// allocates. The counter is process-wide and span-granular, so it takes the
// least of a few runs: a decoder that trusts a claimed size over-allocates
// every time, background noise does not.
func minDecodeAlloc(data []byte) uint64 {
	best := ^uint64(0)
	for range 3 {
		var m Message
		before := heapAllocBytes()
		_ = m.UnmarshalBinary(data)
		best = min(best, heapAllocBytes()-before)
		if best <= uint64(len(data)) {
			break
		}
	}
	return best
}

// FuzzMessageUnmarshal feeds arbitrary bytes to UnmarshalBinary. It checks
// that decoding never panics, that a failure leaves the target untouched,
// that what decodes re-encodes to bytes that decode to the same Message
// (a canonical round trip), and that decoding allocates memory proportional
// to the input, never to lengths or counts the input merely claims.
func FuzzMessageUnmarshal(f *testing.F) {
	for _, m := range codecSeedMessages() {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2]) // truncated
	}
	f.Add([]byte{})
	f.Add([]byte{messageVersion})
	f.Add([]byte{2, byte(MsgApp)})                                                                       // unknown version
	f.Add([]byte{messageVersion, byte(MsgApp), 1, 2, 3, 4, 5, 6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}) // huge entry count
	f.Add([]byte{messageVersion, byte(MsgSnap), 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})

	f.Fuzz(func(t *testing.T, input []byte) {
		data := bytes.Clone(input) // scribbled on below
		sentinel := Message{Type: MsgHeartbeat, From: 42, To: 43, Term: 44}
		m := sentinel
		err := m.UnmarshalBinary(data)

		// Allocation bound: a Message decoded from n bytes may need about
		// 12 bytes of Entry headers per 4 input bytes; anything far above
		// that means the decoder trusted a claimed size. The slack covers
		// error formatting, the runtime's span-granular accounting and
		// unrelated allocations.
		if alloc := minDecodeAlloc(data); alloc > uint64(16*len(data)+64<<10) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(data), alloc)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			if !reflect.DeepEqual(m, sentinel) {
				t.Fatalf("failed decode (%v) modified the target: %+v", err, m)
			}
			return
		}
		if got, limit := retainedBytes(&m), 16*len(data)+64; got > limit {
			t.Fatalf("decoded message retains %d bytes from a %d-byte input", got, len(data))
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding a decoded message: %v", err)
		}
		// The decoded message must not alias the input.
		for i := range data {
			data[i] ^= 0xff
		}
		if enc2, _ := m.MarshalBinary(); !bytes.Equal(enc, enc2) {
			t.Fatalf("decoded message changed when its input was overwritten")
		}
		var again Message
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed the message:\n first %+v\nsecond %+v", m, again)
		}
		enc2, _ := again.MarshalBinary()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not canonical:\n%x\n%x", enc, enc2)
		}
	})
}

// FuzzMessageRoundTrip builds Messages from fuzzed field values and checks
// that MarshalBinary then UnmarshalBinary gives back an equal Message.
func FuzzMessageRoundTrip(f *testing.F) {
	f.Add(uint8(MsgApp), uint64(1), uint64(2), uint64(3), uint64(4), true, []byte("cmd"), []byte("snap"), "127.0.0.1:1", uint8(2))
	f.Add(uint8(MsgSnap), uint64(1<<63), uint64(0), uint64(1<<64-1), uint64(0), false, []byte{}, []byte{0}, "", uint8(0))
	f.Fuzz(func(t *testing.T, typ uint8, from, to, term, index uint64, flag bool, data, snap []byte, addr string, nents uint8) {
		m := Message{
			Type: MessageType(typ%uint8(msgTypeEnd-1)) + 1, From: NodeID(from), To: NodeID(to), Term: term,
			LogTerm: term / 2, Index: index, Commit: index / 3, Reject: flag, RejectHint: ^index,
			Context: from ^ to, SnapshotOffset: index * 7, SnapshotDone: !flag,
		}
		for i := range nents % 8 {
			m.Entries = append(m.Entries, Entry{Index: index + uint64(i), Term: term, Type: EntryType(i % 3), Data: data})
		}
		if len(snap) > 0 {
			m.SnapshotData = snap
			m.Snapshot = SnapshotMeta{Index: index, Term: term, Config: Configuration{Servers: []Server{{ID: NodeID(from), Addr: addr, Suffrage: Suffrage(typ % 2)}}}}
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Message
		if err := got.UnmarshalBinary(enc); err != nil {
			t.Fatalf("decode of %+v: %v", m, err)
		}
		// The decoder returns nil for empty byte strings.
		for i := range m.Entries {
			if len(m.Entries[i].Data) == 0 {
				m.Entries[i].Data = nil
			}
		}
		if !reflect.DeepEqual(normalizeMsg(m), normalizeMsg(got)) {
			t.Fatalf("round trip changed the message:\n sent %+v\n got  %+v", m, got)
		}
	})
}

// normalizeMsg compares entry data by value and treats nil and empty slices
// alike.
func normalizeMsg(m Message) Message {
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	ents := make([]Entry, len(m.Entries))
	for i, e := range m.Entries {
		if len(e.Data) == 0 {
			e.Data = nil
		} else {
			e.Data = bytes.Clone(e.Data)
		}
		ents[i] = e
	}
	if len(ents) > 0 {
		m.Entries = ents
	}
	if len(m.SnapshotData) == 0 {
		m.SnapshotData = nil
	}
	return m
}
