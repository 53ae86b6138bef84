// Command bench compares this library (github.com/raftgo/raft) with
// github.com/hashicorp/raft and go.etcd.io/raft/v3: each runs a 3-node
// cluster in this process with the same trivial counter state machine, and
// closed-loop proposers measure throughput, latency and allocations.
//
// Contenders run alternately (A B C A B C ...) for several rounds; the
// report gives the median of rounds and the ratio of this library to each
// other contender. Run `go run . -h` for the flags; docs/benchmarks.md has
// a run from the project's machine.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"
)

type options struct {
	variants    []string
	contenders  []string
	clients     []int
	sizes       []int
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	etcdSweep   []int
	etcdFixed   int
	dir         string
	mdOut       string
	svgOut      string
	jsonOut     string
	from        string
	cpuProfile  string
	traceOut    string
	memProfile  string
	fsyncProbe  time.Duration
	sweepRounds int
	benchOut    string
	bench       io.Writer // per-round lines in Go benchmark format, or nil
}

func main() {
	var o options
	var variants, contenders, clients, sizes, sweep string
	flag.StringVar(&variants, "variants", "mem,durable,tcp", "comma-separated variants: mem (in-memory storage and transport), durable (fsync'd storage), tcp (loopback TCP transport)")
	flag.StringVar(&contenders, "contenders", "raftgo,hashicorp,etcd", "comma-separated contenders (etcd runs in the mem variant only)")
	flag.StringVar(&clients, "clients", "1,16,64,256", "comma-separated counts of concurrent closed-loop proposers")
	flag.StringVar(&sizes, "sizes", "128,4096", "comma-separated command sizes in bytes (>= 8)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per workload; each round runs every contender once, alternately")
	flag.DurationVar(&o.duration, "duration", time.Second, "measured window per contender per round")
	flag.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "unmeasured warm-up before each window")
	flag.StringVar(&sweep, "etcd-inflight", "4,16,64,256", "etcd MaxInflightMsgs values to sweep (64 proposers, 128 B, mem); the best is used for etcd everywhere")
	flag.IntVar(&o.etcdFixed, "etcd-inflight-fixed", 0, "skip the sweep and use this etcd MaxInflightMsgs")
	flag.IntVar(&o.sweepRounds, "sweep-rounds", 3, "rounds per setting in the etcd MaxInflightMsgs sweep")
	flag.StringVar(&o.dir, "dir", "", "directory for the durable variant's files (default: a new temporary directory, removed afterwards)")
	flag.StringVar(&o.mdOut, "md", "", "write the result tables as Markdown to this file")
	flag.StringVar(&o.svgOut, "svg", "", "write a chart of throughput against proposers (SVG) to this file")
	flag.StringVar(&o.jsonOut, "json", "", "write the raw results as JSON to this file")
	flag.StringVar(&o.from, "from", "", "do not run: load results from this JSON file (written by -json) and print/render them")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&o.traceOut, "trace", "", "write an execution trace of the whole run to this file (keep the run short)")
	flag.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the whole run to this file")
	flag.StringVar(&o.benchOut, "benchfmt", "", "also write every round as a line in Go benchmark format to this file (for benchstat)")
	flag.DurationVar(&o.fsyncProbe, "fsync-probe", time.Second, "how long to measure this disk's append+fsync rate with one writer at the start of the durable variant; for half as long, before every round, the in-place write+fdatasync rate per writer with three writers at once (0 skips both)")
	quick := flag.Bool("quick", false, "a quick run (about two minutes): in-memory variant only, 400ms windows, 2-setting etcd sweep")
	flag.Parse()
	if *quick {
		variants = "mem"
		o.duration, o.warmup = 400*time.Millisecond, 150*time.Millisecond
		sweep = "16,256"
		o.sweepRounds = 2
	}
	var err error
	o.variants = splitList(variants)
	o.contenders = splitList(contenders)
	if o.clients, err = parseInts(clients); err == nil {
		if o.sizes, err = parseInts(sizes); err == nil && sweep != "" {
			o.etcdSweep, err = parseInts(sweep)
		}
	}
	if err == nil {
		err = o.check()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	for _, v := range o.variants {
		if v != "mem" && v != "durable" && v != "tcp" {
			return fmt.Errorf("unknown variant %q (want mem, durable or tcp)", v)
		}
	}
	for _, c := range o.contenders {
		if c != "raftgo" && c != "hashicorp" && c != "etcd" {
			return fmt.Errorf("unknown contender %q (want raftgo, hashicorp or etcd)", c)
		}
	}
	for _, s := range o.sizes {
		if s < 8 {
			return fmt.Errorf("command size %d is below 8 bytes (the request ID)", s)
		}
	}
	for _, c := range o.clients {
		if c < 1 {
			return fmt.Errorf("proposer count %d must be at least 1", c)
		}
	}
	if o.rounds < 1 || o.sweepRounds < 1 {
		return errors.New("-rounds and -sweep-rounds must be at least 1")
	}
	if o.duration <= 0 || o.warmup < 0 {
		return errors.New("-duration must be positive and -warmup not negative")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad number %q in list %q", f, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func run(o options) error {
	var rep *report
	if o.from != "" {
		data, err := os.ReadFile(o.from)
		if err != nil {
			return err
		}
		rep = &report{}
		if err := json.Unmarshal(data, rep); err != nil {
			return fmt.Errorf("%s: %w", o.from, err)
		}
	} else {
		if o.cpuProfile != "" {
			f, err := os.Create(o.cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		if o.traceOut != "" {
			f, err := os.Create(o.traceOut)
			if err != nil {
				return err
			}
			if err := trace.Start(f); err != nil {
				return err
			}
			defer func() { trace.Stop(); f.Close() }()
		}
		if o.memProfile != "" {
			runtime.MemProfileRate = 64 << 10
		}
		if o.benchOut != "" {
			f, err := os.Create(o.benchOut)
			if err != nil {
				return err
			}
			defer f.Close()
			fmt.Fprintf(f, "goos: %s\ngoarch: %s\npkg: github.com/raftgo/raft/bench\n", runtime.GOOS, runtime.GOARCH)
			o.bench = f
		}
		var err error
		if rep, err = runAll(o); err != nil {
			return err
		}
		if o.memProfile != "" {
			f, err := os.Create(o.memProfile)
			if err != nil {
				return err
			}
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				return err
			}
			f.Close()
		}
	}
	rep.print(os.Stdout)
	if o.jsonOut != "" && o.from == "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, data, 0o644); err != nil {
			return err
		}
	}
	if o.mdOut != "" {
		f, err := os.Create(o.mdOut)
		if err != nil {
			return err
		}
		rep.markdown(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if o.svgOut != "" {
		if err := os.WriteFile(o.svgOut, rep.chart(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// contender is one library set up for one variant.
type contender struct {
	name  string
	start func() (cluster, error)
	c     cluster
}

func runAll(o options) (*report, error) {
	rep := &report{
		Command:  "cd bench && go run . " + strings.Join(os.Args[1:], " "),
		Date:     time.Now().UTC().Format(time.RFC3339),
		GoOS:     runtime.GOOS,
		GoArch:   runtime.GOARCH,
		CPUs:     runtime.NumCPU(),
		Go:       runtime.Version(),
		Rounds:   o.rounds,
		Duration: o.duration.String(),
	}
	if has(o.contenders, "etcd") && has(o.variants, "mem") {
		rep.EtcdInflight = o.etcdFixed
		if rep.EtcdInflight == 0 {
			best, sweep, err := etcdSweep(o)
			if err != nil {
				return nil, err
			}
			rep.EtcdInflight, rep.EtcdSweep = best, sweep
		}
	}
	for _, v := range o.variants {
		var cs []*contender
		var notes []string
		dir := ""
		switch v {
		case "mem":
			if has(o.contenders, "raftgo") {
				cs = append(cs, &contender{name: "raftgo", start: func() (cluster, error) { return startRaftgo(raftgoOptions{}) }})
			}
			if has(o.contenders, "hashicorp") {
				cs = append(cs, &contender{name: "hashicorp", start: func() (cluster, error) { return startHashicorp(hcOptions{}) }})
			}
			if has(o.contenders, "etcd") {
				inflight := rep.EtcdInflight
				cs = append(cs, &contender{name: "etcd", start: func() (cluster, error) { return startEtcd(inflight) }})
			}
		case "durable":
			d, cleanup, err := tempDir(o.dir)
			if err != nil {
				return nil, err
			}
			defer cleanup()
			dir = d
			if o.fsyncProbe > 0 {
				rate, err := probeFsync(dir, o.fsyncProbe)
				if err != nil {
					return nil, err
				}
				rep.FsyncPerSec = rate
				fmt.Printf("disk: %.0f fsyncs/s (4 KiB write + fsync, %v probe in %s)\n", rate, o.fsyncProbe, dir)
			}
			if has(o.contenders, "raftgo") {
				if raftgoDurable == nil {
					notes = append(notes, "raftgo: durable storage package not available in this build; skipped")
				} else {
					cs = append(cs, &contender{name: "raftgo", start: func() (cluster, error) { return startRaftgo(raftgoDurable(dir)) }})
				}
			}
			if has(o.contenders, "hashicorp") {
				cs = append(cs, &contender{name: "hashicorp", start: func() (cluster, error) { return startHashicorp(hcOptions{dir: dir}) }})
			}
		case "tcp":
			if has(o.contenders, "raftgo") {
				if raftgoTCP == nil {
					notes = append(notes, "raftgo: TCP transport package not available in this build; skipped")
				} else {
					cs = append(cs, &contender{name: "raftgo", start: func() (cluster, error) { return startRaftgo(raftgoTCP()) }})
				}
			}
			if has(o.contenders, "hashicorp") {
				cs = append(cs, &contender{name: "hashicorp", start: func() (cluster, error) { return startHashicorp(hcOptions{tcp: true}) }})
			}
		}
		for _, n := range notes {
			fmt.Println("note:", n)
		}
		vr := variantResult{Name: v, Notes: notes}
		var probe func(writeSize int) (float64, error)
		if v == "durable" && o.fsyncProbe > 0 {
			probe = func(writeSize int) (float64, error) { return probeFsyncShared(dir, 3, writeSize, o.fsyncProbe/2) }
		}
		if err := runVariant(o, v, cs, &vr, probe); err != nil {
			return nil, fmt.Errorf("variant %s: %w", v, err)
		}
		rep.Variants = append(rep.Variants, vr)
	}
	return rep, nil
}

// runVariant starts each contender's cluster once and measures every
// workload, alternating contenders within each round.
// If probe is set, it measures the disk before every round with 4 KiB
// writes, and after raftgo's turn with writes of raftgo's mean size.
func runVariant(o options, v string, cs []*contender, vr *variantResult, probe func(writeSize int) (float64, error)) error {
	if len(cs) == 0 {
		return nil
	}
	for _, c := range cs {
		t0 := time.Now()
		cl, err := c.start()
		if err != nil {
			return fmt.Errorf("starting %s: %w", c.name, err)
		}
		c.c = cl
		fmt.Printf("[%s] %s cluster up in %v\n", v, c.name, time.Since(t0).Round(time.Millisecond))
	}
	defer func() {
		for _, c := range cs {
			c.c.Stop()
		}
	}()
	for _, size := range o.sizes {
		for _, clients := range o.clients {
			w := workload{clients: clients, size: size}
			rs := make([]*result, len(cs))
			for i, c := range cs {
				rs[i] = &result{Contender: c.name, Clients: clients, Size: size}
			}
			for r := range o.rounds {
				if probe != nil {
					rate, err := probe(4096)
					if err != nil {
						return fmt.Errorf("probing the disk: %w", err)
					}
					for _, res := range rs {
						res.roundShared = append(res.roundShared, rate)
					}
					fmt.Printf("[%s] disk: %.0f syncs/s per writer, 3 writers at once (4 KiB in place + fdatasync)\n", v, rate)
				}
				for i, c := range cs {
					s, err := measure(c.c, w, o.warmup, o.duration)
					if err != nil {
						return fmt.Errorf("%s, %v, round %d: %w", c.name, w, r+1, err)
					}
					rs[i].add(s)
					if probe != nil && s.batch > 0 {
						// Entry records carry about 32 bytes besides the command.
						n := int(s.batch * float64(size+32))
						rate, err := probe(n)
						if err != nil {
							return fmt.Errorf("probing the disk: %w", err)
						}
						rs[i].roundSized = append(rs[i].roundSized, rate)
						rs[i].WriteBytes = float64(n)
					}
					if o.bench != nil {
						fmt.Fprintf(o.bench, "BenchmarkCluster/%s/%s/proposers=%d/size=%d 1 %.1f ns/op %.0f ops/s %.0f p50-ns %.0f p99-ns %.0f cpu-ns/op %.2f allocs/op %.0f B/op\n",
							v, c.name, clients, size, float64(s.elapsed.Nanoseconds())/float64(s.ops), s.throughput,
							float64(s.p50.Nanoseconds()), float64(s.p99.Nanoseconds()), float64(s.cpuOp.Nanoseconds()), s.allocsOp, s.bytesOp)
					}
					fmt.Printf("[%s] %-9s %-22s round %d: %9.0f ops/s  p50 %-9v p99 %-9v %6.1f allocs/op\n",
						v, c.name, w, r+1, s.throughput, s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond), s.allocsOp)
				}
			}
			for _, r := range rs {
				r.summarize()
				vr.Results = append(vr.Results, *r)
			}
		}
	}
	return nil
}

// etcdSweep measures etcd raft at each MaxInflightMsgs setting on the
// 64-proposer, 128-byte in-memory workload and returns the best.
func etcdSweep(o options) (int, []sweepPoint, error) {
	if len(o.etcdSweep) == 0 {
		return 256, nil, nil
	}
	w := workload{clients: 64, size: 128}
	clusters := make([]cluster, len(o.etcdSweep))
	for i, inflight := range o.etcdSweep {
		c, err := startEtcd(inflight)
		if err != nil {
			return 0, nil, err
		}
		clusters[i] = c
	}
	defer func() {
		for _, c := range clusters {
			c.Stop()
		}
	}()
	tps := make([][]float64, len(o.etcdSweep))
	for r := range o.sweepRounds {
		for i, inflight := range o.etcdSweep {
			s, err := measure(clusters[i], w, o.warmup, o.duration)
			if err != nil {
				return 0, nil, fmt.Errorf("etcd sweep MaxInflightMsgs=%d: %w", inflight, err)
			}
			tps[i] = append(tps[i], s.throughput)
			fmt.Printf("[etcd sweep] MaxInflightMsgs=%-4d %v round %d: %9.0f ops/s\n", inflight, w, r+1, s.throughput)
		}
	}
	var pts []sweepPoint
	best, bestTP := 0, -1.0
	for i, inflight := range o.etcdSweep {
		m := median(tps[i])
		pts = append(pts, sweepPoint{Inflight: inflight, Throughput: m})
		if m > bestTP {
			best, bestTP = inflight, m
		}
	}
	fmt.Printf("[etcd sweep] best MaxInflightMsgs=%d (%.0f ops/s)\n", best, bestTP)
	return best, pts, nil
}

func tempDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		d, err := os.MkdirTemp(dir, "raftbench-")
		return d, func() { os.RemoveAll(d) }, err
	}
	d, err := os.MkdirTemp("", "raftbench-")
	return d, func() { os.RemoveAll(d) }, err
}

// probeFsync measures how many 4 KiB append+fsync cycles per second the
// disk under dir sustains: the ceiling of one-write-per-commit storage.
func probeFsync(dir string, d time.Duration) (float64, error) {
	return probeSyncs(dir, d, 0, 4096, func(f *os.File, buf []byte, _ int64) error {
		if _, err := f.Write(buf); err != nil {
			return err
		}
		return f.Sync()
	})
}

// probeSyncInPlace measures how many write+fdatasync cycles per second of
// writeSize bytes the disk sustains writing into a file already filled
// with zeros (no size change, so no journal commit): with 4 KiB writes, the
// fastest way this disk offers to make a small write durable, and the way
// filestorage writes its log.
func probeSyncInPlace(dir string, writeSize int, d time.Duration) (float64, error) {
	size := max(int64(8<<20), 8*int64(writeSize))
	size -= size % int64(writeSize)
	return probeSyncs(dir, d, size, writeSize, func(f *os.File, buf []byte, i int64) error {
		if _, err := f.WriteAt(buf, i*int64(len(buf))%size); err != nil {
			return err
		}
		return syncData(f)
	})
}

// probeSyncs runs step (one durable write of writeSize bytes; i counts
// them) in a loop for d on a temporary file in dir, first filled with
// prefill zero bytes and synced, and returns the steps per second.
func probeSyncs(dir string, d time.Duration, prefill int64, writeSize int, step func(f *os.File, buf []byte, i int64) error) (float64, error) {
	f, err := os.CreateTemp(dir, "sync-probe-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if prefill > 0 {
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < prefill; off += int64(len(zeros)) {
			if _, err := f.Write(zeros); err != nil {
				return 0, err
			}
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	buf := make([]byte, writeSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		if err := step(f, buf, n); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// probeFsyncShared measures the disk as a 3-node cluster on it uses it:
// writers goroutines each write writeSize bytes in place and fdatasync in
// a loop, at once (probeSyncInPlace). It returns the mean rate per writer.
func probeFsyncShared(dir string, writers, writeSize int, d time.Duration) (float64, error) {
	rates := make([]float64, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rates[i], errs[i] = probeSyncInPlace(dir, writeSize, d)
		}()
	}
	wg.Wait()
	sum := 0.0
	for i := range writers {
		if errs[i] != nil {
			return 0, errs[i]
		}
		sum += rates[i]
	}
	return sum / float64(writers), nil
}

func putUint64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// readCounter reads a counter snapshot written by counterSnapshot.WriteTo.
func readCounter(r io.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("reading counter snapshot: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// raftgoDurable and raftgoTCP build this library's durable-storage and TCP
// options; they are set by raftgo_durable.go and raftgo_tcp.go.
var (
	raftgoDurable func(dir string) raftgoOptions
	raftgoTCP     func() raftgoOptions
)
