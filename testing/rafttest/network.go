package rafttest

import (
	"container/heap"
	"math/rand/v2"

	"github.com/raftgo/raft"
)

// network is the simulated network: messages in flight ordered by delivery
// time, per-link cuts and the current loss, duplication, reordering and
// delay settings.
type network struct {
	rng   *rand.Rand
	nodes int
	q     flightQueue
	free  []*flight
	seq   uint64
	// cut[from][to] is true when the link from -> to is cut (1-based).
	cut [][]bool

	drop, dup, reorder float64
	maxDelay           int64 // in sub-ticks, at least 1

	sent, dropped, duplicated, delivered uint64
}

type flight struct {
	at  int64
	seq uint64
	m   raft.Message
}

type flightQueue []*flight

func (q flightQueue) Len() int { return len(q) }
func (q flightQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].seq < q[j].seq)
}
func (q flightQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *flightQueue) Push(x any)   { *q = append(*q, x.(*flight)) }
func (q *flightQueue) Pop() any {
	old := *q
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return f
}

func newNetwork(rng *rand.Rand, nodes int) *network {
	nw := &network{rng: rng, nodes: nodes, maxDelay: SubTicks}
	nw.cut = make([][]bool, nodes+1)
	for i := range nw.cut {
		nw.cut[i] = make([]bool, nodes+1)
	}
	return nw
}

func (nw *network) isCut(from, to raft.NodeID) bool {
	return int(from) <= nw.nodes && int(to) <= nw.nodes && nw.cut[from][to]
}

// send puts m in flight at time now. It reports whether m was lost.
func (nw *network) send(m raft.Message, now int64) (lost bool) {
	nw.sent++
	if nw.isCut(m.From, m.To) || (nw.drop > 0 && nw.rng.Float64() < nw.drop) {
		nw.dropped++
		return true
	}
	nw.push(m, now)
	if nw.dup > 0 && nw.rng.Float64() < nw.dup {
		nw.duplicated++
		nw.push(m, now)
	}
	return false
}

func (nw *network) push(m raft.Message, now int64) {
	d := 1 + nw.rng.Int64N(nw.maxDelay)
	if nw.reorder > 0 && nw.rng.Float64() < nw.reorder {
		// Held back long enough for later messages to overtake it.
		d += 1 + nw.rng.Int64N(3*nw.maxDelay+2*SubTicks)
	}
	nw.seq++
	var f *flight
	if k := len(nw.free); k > 0 {
		f, nw.free = nw.free[k-1], nw.free[:k-1]
	} else {
		f = new(flight)
	}
	f.at, f.seq, f.m = now+d, nw.seq, m
	heap.Push(&nw.q, f)
}

// next pops the next message due at or before now.
func (nw *network) next(now int64) (raft.Message, bool) {
	if len(nw.q) == 0 || nw.q[0].at > now {
		return raft.Message{}, false
	}
	f := heap.Pop(&nw.q).(*flight)
	m := f.m
	f.m = raft.Message{}
	nw.free = append(nw.free, f)
	return m, true
}

// partition cuts every link between different groups; nodes in no group
// form one more group.
func (nw *network) partition(groups [][]raft.NodeID) {
	group := make([]int, nw.nodes+1)
	for i := range group {
		group[i] = -1
	}
	for gi, g := range groups {
		for _, id := range g {
			group[id] = gi
		}
	}
	for a := 1; a <= nw.nodes; a++ {
		for b := 1; b <= nw.nodes; b++ {
			nw.cut[a][b] = group[a] != group[b]
		}
	}
}

func (nw *network) cutOneWay(from, to []raft.NodeID) {
	for _, a := range from {
		for _, b := range to {
			if a != b {
				nw.cut[a][b] = true
			}
		}
	}
}

// isolate cuts (or, with on false, restores) every link of id.
func (nw *network) isolate(id raft.NodeID, on bool) {
	for o := 1; o <= nw.nodes; o++ {
		if o != int(id) {
			nw.cut[id][o], nw.cut[o][id] = on, on
		}
	}
}

func (nw *network) heal() {
	for a := range nw.cut {
		clear(nw.cut[a])
	}
}

func (nw *network) set(drop, dup, reorder float64, delayTicks int) {
	nw.drop, nw.dup, nw.reorder = drop, dup, reorder
	nw.maxDelay = max(1, int64(delayTicks)*SubTicks)
}
