package kvstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/testing/rafttest"
)

// TestStoreUnderRaftFaults runs the Store as the replicas of simulated
// clusters with loss, partitions, crashes and snapshots: every replica
// must return the same results and reach the same snapshot bytes.
// KVSTORE_CHECK_SEEDS sets the number of seeded runs (default 10).
func TestStoreUnderRaftFaults(t *testing.T) {
	seeds := 10
	if s := os.Getenv("KVSTORE_CHECK_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KVSTORE_CHECK_SEEDS=%q is not a positive integer", s)
		}
		seeds = n
	}
	rafttest.CheckStateMachine(t, func() raft.StateMachine { return New(8) }, rafttest.CheckOptions{
		Seeds: seeds,
		Commands: func(r *rand.Rand) []byte {
			c := Command{Op: Op(1 + r.IntN(int(opEnd)-1)), Key: fmt.Sprint("k", r.IntN(6)), Value: []byte(fmt.Sprint(r.IntN(4)))}
			if c.Op == OpCAS {
				c.Expect, c.ExpectAbsent = []byte(fmt.Sprint(r.IntN(4))), r.IntN(4) == 0
			}
			if r.IntN(2) == 0 {
				// Few clients, so sessions are evicted (limit 8) and
				// sequence numbers repeat and go stale.
				c.ClientID, c.Seq = uint64(1+r.IntN(12)), uint64(1+r.IntN(5))
			}
			b, err := c.MarshalBinary()
			if err != nil {
				panic(err)
			}
			return b
		},
		Query: func(r *rand.Rand) []byte { return []byte(fmt.Sprint("k", r.IntN(6))) },
		Read: func(sm raft.StateMachine, q []byte) any {
			v, ok := sm.(*Store).Get(string(q))
			return fmt.Sprint(string(v), ok)
		},
	})
}
