package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// cluster is a running 3-node cluster of one contender. Propose returns
// once cmd is applied to the state machine of the leader it was proposed
// on.
type cluster interface {
	Propose(ctx context.Context, cmd []byte) error
	Stop()
}

// batchReporter is implemented by clusters that can say how many entries
// the leader persisted per storage write (group commit) since the last call.
type batchReporter interface {
	BatchStats() (writes, entries uint64)
}

// workload is one measured configuration: closed-loop proposers each
// sending commands of size bytes.
type workload struct {
	clients int
	size    int
}

func (w workload) String() string {
	return fmt.Sprintf("%d proposers, %s", w.clients, sizeName(w.size))
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// sample is the outcome of one measured window.
type sample struct {
	ops        uint64
	errs       uint64
	elapsed    time.Duration
	throughput float64 // ops per second
	p50, p99   time.Duration
	allocsOp   float64       // heap allocations per completed op, whole process
	bytesOp    float64       // heap bytes allocated per completed op
	cpuOp      time.Duration // process CPU time (user+system) per completed op
	batch      float64       // mean entries per leader storage write (0 if unknown)
	writesSec  float64       // leader storage writes per second (0 if unknown)
}

// measure runs w against c: warmup, then a measured window of d.
// Each proposer allocates a fresh command per proposal (as an application
// encoding a request would) carrying a unique 8-byte request ID, so every
// contender pays the same cost for it.
func measure(c cluster, w workload, warmup, d time.Duration) (sample, error) {
	const (
		phaseWarm = iota
		phaseMeasure
		phaseStop
	)
	var phase atomic.Int32
	var fatal atomic.Pointer[error]
	hists := make([]histogram, w.clients)
	counts := make([]struct {
		ops, errs uint64
		_         [48]byte // keep counters of different proposers on different cache lines
	}, w.clients)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, cnt := &hists[i], &counts[i]
			consecutive := 0
			for {
				ph := phase.Load()
				if ph == phaseStop {
					return
				}
				cmd := make([]byte, w.size)
				binary.LittleEndian.PutUint64(cmd, nextID.Add(1))
				t0 := time.Now()
				err := c.Propose(ctx, cmd)
				lat := time.Since(t0)
				if phase.Load() != phaseMeasure {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					cnt.errs++
					consecutive++
					if consecutive > 1000 {
						e := fmt.Errorf("proposer %d: %w", i, err)
						fatal.CompareAndSwap(nil, &e)
						return
					}
					continue
				}
				consecutive = 0
				cnt.ops++
				h.record(lat)
			}
		}()
	}
	time.Sleep(warmup)
	br, _ := c.(batchReporter)
	var w0, e0 uint64
	if br != nil {
		w0, e0 = br.BatchStats()
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	start := time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(d)
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	cpu1 := processCPU()
	runtime.ReadMemStats(&m1)
	var w1, e1 uint64
	if br != nil {
		w1, e1 = br.BatchStats()
	}
	stuck := false
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		// A proposal is stuck (lost by the library or its driver): give
		// up on it, count it as an error and keep the window's numbers.
		cancel()
		<-stopped
		stuck = true
	}
	if e := fatal.Load(); e != nil {
		return sample{}, *e
	}
	var s sample
	var all histogram
	for i := range hists {
		all.merge(&hists[i])
		s.ops += counts[i].ops
		s.errs += counts[i].errs
	}
	if stuck {
		s.errs++
		fmt.Printf("warning: %v: a proposal did not return within 30s of the end of the window; counted as an error\n", w)
	}
	if s.ops == 0 {
		return sample{}, errors.New("no proposal completed in the window")
	}
	s.elapsed = elapsed
	s.throughput = float64(s.ops) / elapsed.Seconds()
	s.p50, s.p99 = all.quantile(0.50), all.quantile(0.99)
	s.allocsOp = float64(m1.Mallocs-m0.Mallocs) / float64(s.ops)
	s.bytesOp = float64(m1.TotalAlloc-m0.TotalAlloc) / float64(s.ops)
	s.cpuOp = (cpu1 - cpu0) / time.Duration(s.ops)
	if br != nil && w1 > w0 {
		s.batch = float64(e1-e0) / float64(w1-w0)
		s.writesSec = float64(w1-w0) / elapsed.Seconds()
	}
	return s, nil
}

// nextID numbers commands across all measurements, so a request ID is
// never reused on a long-lived cluster.
var nextID atomic.Uint64

// histogram is a log-linear latency histogram in nanoseconds: 32
// sub-buckets per power of two (about 3% resolution). Recording never
// allocates.
type histogram struct {
	counts [64 * histSub]uint64
	n      uint64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - 1 - histSubBits // shift that keeps histSubBits+1 bits
	return (e+1)*histSub + int(v>>uint(e)) - histSub
}

// histLower returns the smallest value that falls in bucket i.
func histLower(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return m << uint(e)
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	i := min(histIndex(v), len(h.counts)-1)
	h.counts[i]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the midpoint of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLower(i), histLower(i+1)
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return 0
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// waitFor polls cond every millisecond until it holds or timeout passes.
func waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
