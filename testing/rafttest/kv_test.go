package rafttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/raftgo/raft"
)

// kvSM is a small key-value state machine: commands are "P<key><value>"
// (put) and queries "G<key>" (get).
type kvSM struct {
	m map[string]string
}

func newKV() raft.StateMachine { return &kvSM{m: map[string]string{}} }

func (s *kvSM) Apply(e raft.Entry) any {
	if len(e.Data) < 2 || e.Data[0] != 'P' {
		return "bad command"
	}
	s.m[string(e.Data[1:2])] = string(e.Data[2:])
	return "ok"
}

func (s *kvSM) Snapshot() (raft.Snapshot, error) {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(s.m[k])))
		b = append(b, s.m[k]...)
	}
	return byteSnapshot(b), nil
}

func (s *kvSM) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := map[string]string{}
	br := bytes.NewReader(data)
	for br.Len() > 0 {
		var kv [2]string
		for i := range kv {
			n, err := binary.ReadUvarint(br)
			if err != nil || n > uint64(br.Len()) {
				return errors.New("kv: corrupt snapshot")
			}
			buf := make([]byte, n)
			io.ReadFull(br, buf)
			kv[i] = string(buf)
		}
		m[kv[0]] = kv[1]
	}
	s.m = m
	return nil
}

const kvKeys = "abcde"

func kvCommand(r *rand.Rand) []byte {
	return fmt.Appendf(nil, "P%c%08x", kvKeys[r.IntN(len(kvKeys))], r.Uint32())
}

func kvQuery(r *rand.Rand) []byte { return []byte{'G', kvKeys[r.IntN(len(kvKeys))]} }

func kvRead(sm raft.StateMachine, q []byte) any { return sm.(*kvSM).m[string(q[1:])] }

func kvWorkload() Workload {
	return Workload{Clients: 3, Command: kvCommand, Query: kvQuery, Read: kvRead, ReadRatio: 0.3}
}

// kvInput is an operation of the porcupine model.
type kvInput struct {
	put        bool
	key, value string
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			by[k] = append(by[k], op)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(by))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.put {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output)
	},
}

// checkLinearizable checks a key-value history with porcupine. On a
// violation it writes porcupine's visualization to a temporary file and
// names it in the error.
func checkLinearizable(history []Op) error {
	ops := make([]porcupine.Operation, 0, len(history))
	for _, h := range history {
		var in kvInput
		var out any = ""
		if h.Read {
			in = kvInput{key: string(h.Input[1:])}
			out = h.Output
		} else {
			in = kvInput{put: true, key: string(h.Input[1:2]), value: string(h.Input[2:])}
		}
		ops = append(ops, porcupine.Operation{ClientId: h.Client, Input: in, Call: h.Call, Output: out, Return: h.Return})
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, 20*time.Second)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return nil // the checker timed out: no violation found
	}
	f, err := os.CreateTemp("", "rafttest-linearizability-*.html")
	if err != nil {
		return fmt.Errorf("history is not linearizable (and the visualization could not be written: %v)", err)
	}
	defer f.Close()
	if err := porcupine.Visualize(kvModel, info, f); err != nil {
		return fmt.Errorf("history is not linearizable (visualization failed: %v)", err)
	}
	return fmt.Errorf("history of %d operations is not linearizable; visualization: %s", len(ops), f.Name())
}
