package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// report is everything one run measured.
type report struct {
	Command      string          `json:"command"`
	Date         string          `json:"date"`
	GoOS         string          `json:"goos"`
	GoArch       string          `json:"goarch"`
	CPUs         int             `json:"cpus"`
	Go           string          `json:"go"`
	Rounds       int             `json:"rounds"`
	Duration     string          `json:"duration"`
	EtcdInflight int             `json:"etcd_inflight,omitempty"`
	EtcdSweep    []sweepPoint    `json:"etcd_sweep,omitempty"`
	FsyncPerSec  float64         `json:"fsync_per_sec,omitempty"`
	Variants     []variantResult `json:"variants"`
}

type sweepPoint struct {
	Inflight   int     `json:"inflight"`
	Throughput float64 `json:"throughput"`
}

type variantResult struct {
	Name    string   `json:"name"`
	Notes   []string `json:"notes,omitempty"`
	Results []result `json:"results"`
}

// result is one contender on one workload: every round and the medians.
type result struct {
	Contender string `json:"contender"`
	Clients   int    `json:"clients"`
	Size      int    `json:"size"`

	RoundThroughput []float64 `json:"round_throughput"`
	roundP50        []float64
	roundP99        []float64
	roundAllocs     []float64
	roundBytes      []float64
	roundCPU        []float64
	roundBatch      []float64
	roundWrites     []float64

	Errors     uint64  `json:"errors"`
	Throughput float64 `json:"throughput"` // median ops/s
	P50us      float64 `json:"p50_us"`     // median of rounds' p50, microseconds
	P99us      float64 `json:"p99_us"`
	AllocsOp   float64 `json:"allocs_per_op"`
	BytesOp    float64 `json:"bytes_per_op"`
	CPUus      float64 `json:"cpu_us_per_op"`        // process CPU time per op, microseconds
	Batch      float64 `json:"batch,omitempty"`      // mean entries per leader log write
	WritesSec  float64 `json:"writes_sec,omitempty"` // leader log writes per second
	// SharedSyncs is the disk's sync rate per writer with one writer per
	// node syncing at once (4 KiB written in place, then fdatasync: the
	// cheapest durable write this disk offers), probed just before each
	// round (median).
	SharedSyncs float64 `json:"shared_syncs_per_writer,omitempty"`
	roundShared []float64
	// SizedSyncs is the same rate with writes of WriteBytes, raftgo's
	// mean log write in the round (entries per write x (command + 32
	// bytes of record)), probed just after raftgo's turn (median). Large
	// writes are bound by the disk's bandwidth, which the 4 KiB probe does
	// not see.
	SizedSyncs float64 `json:"sized_syncs_per_writer,omitempty"`
	WriteBytes float64 `json:"write_bytes,omitempty"`
	roundSized []float64
}

func (r *result) add(s sample) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.RoundThroughput = append(r.RoundThroughput, s.throughput)
	r.roundP50 = append(r.roundP50, us(s.p50))
	r.roundP99 = append(r.roundP99, us(s.p99))
	r.roundAllocs = append(r.roundAllocs, s.allocsOp)
	r.roundBytes = append(r.roundBytes, s.bytesOp)
	r.roundCPU = append(r.roundCPU, us(s.cpuOp))
	if s.batch > 0 {
		r.roundBatch = append(r.roundBatch, s.batch)
		r.roundWrites = append(r.roundWrites, s.writesSec)
	}
	r.Errors += s.errs
}

func (r *result) summarize() {
	r.Throughput = median(r.RoundThroughput)
	r.P50us = median(r.roundP50)
	r.P99us = median(r.roundP99)
	r.AllocsOp = median(r.roundAllocs)
	r.BytesOp = median(r.roundBytes)
	r.CPUus = median(r.roundCPU)
	r.Batch = median(r.roundBatch)
	r.WritesSec = median(r.roundWrites)
	r.SharedSyncs = median(r.roundShared)
	r.SizedSyncs = median(r.roundSized)
}

var variantTitles = map[string]string{
	"mem":     "In-memory storage and in-process transport",
	"durable": "Durable storage (fsync on), in-process transport",
	"tcp":     "In-memory storage, loopback TCP transport",
}

// find returns the result of contender on (clients, size), or nil.
func (v *variantResult) find(contender string, clients, size int) *result {
	for i := range v.Results {
		r := &v.Results[i]
		if r.Contender == contender && r.Clients == clients && r.Size == size {
			return r
		}
	}
	return nil
}

// workloads returns the (size, clients) pairs in the order measured.
func (v *variantResult) workloads() []workload {
	var ws []workload
	seen := map[workload]bool{}
	for _, r := range v.Results {
		w := workload{clients: r.Clients, size: r.Size}
		if !seen[w] {
			seen[w] = true
			ws = append(ws, w)
		}
	}
	return ws
}

func (v *variantResult) contenders() []string {
	var cs []string
	for _, r := range v.Results {
		if !has(cs, r.Contender) {
			cs = append(cs, r.Contender)
		}
	}
	return cs
}

func fmtUs(us float64) string {
	switch {
	case us >= 10000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	default:
		return fmt.Sprintf("%.0f µs", us)
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// rows renders one variant as table rows (header first).
func (rep *report) rows(v *variantResult) [][]string {
	durable := v.Name == "durable"
	head := []string{"workload", "library", "ops/s", "p50", "p99", "CPU/op", "allocs/op", "B/op"}
	if durable {
		head = append(head, "entries/write", "writes/s")
	}
	head = append(head, "errors")
	out := [][]string{head}
	for _, w := range v.workloads() {
		for _, c := range v.contenders() {
			r := v.find(c, w.clients, w.size)
			if r == nil {
				continue
			}
			name := c
			if c == "etcd" && rep.EtcdInflight > 0 {
				name = fmt.Sprintf("etcd (inflight %d)", rep.EtcdInflight)
			}
			row := []string{w.String(), name, fmt.Sprintf("%.0f", r.Throughput), fmtUs(r.P50us), fmtUs(r.P99us), fmt.Sprintf("%.1f µs", r.CPUus),
				fmt.Sprintf("%.1f", r.AllocsOp), fmt.Sprintf("%.0f", r.BytesOp)}
			if durable {
				row = append(row, fmt.Sprintf("%.1f", r.Batch), fmt.Sprintf("%.0f", r.WritesSec))
			}
			row = append(row, fmt.Sprint(r.Errors))
			out = append(out, row)
		}
	}
	return out
}

// ratioRows compares raftgo with every other contender per workload.
func (rep *report) ratioRows(v *variantResult) [][]string {
	out := [][]string{{"workload", "vs", "throughput", "p50 latency", "p99 latency", "CPU/op", "allocs/op"}}
	for _, w := range v.workloads() {
		me := v.find("raftgo", w.clients, w.size)
		if me == nil {
			continue
		}
		for _, c := range v.contenders() {
			if c == "raftgo" {
				continue
			}
			o := v.find(c, w.clients, w.size)
			if o == nil {
				continue
			}
			out = append(out, []string{w.String(), c, ratio(me.Throughput, o.Throughput),
				ratio(me.P50us, o.P50us), ratio(me.P99us, o.P99us), ratio(me.CPUus, o.CPUus), ratio(me.AllocsOp, o.AllocsOp)})
		}
	}
	return out
}

func printTable(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := widths[i] - len([]rune(c))
			if i >= 2 {
				b.WriteString(strings.Repeat(" ", pad) + c)
			} else {
				b.WriteString(c + strings.Repeat(" ", pad))
			}
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func markdownTable(w io.Writer, rows [][]string) {
	fmt.Fprintln(w, "| "+strings.Join(rows[0], " | ")+" |")
	seps := make([]string, len(rows[0]))
	for i := range seps {
		seps[i] = "---"
		if i >= 2 {
			seps[i] = "---:"
		}
	}
	fmt.Fprintln(w, "| "+strings.Join(seps, " | ")+" |")
	for _, r := range rows[1:] {
		fmt.Fprintln(w, "| "+strings.Join(r, " | ")+" |")
	}
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s/%s, %d CPUs, %s; %d rounds of %s per contender and workload, medians shown\n",
		rep.Command, rep.GoOS, rep.GoArch, rep.CPUs, rep.Go, rep.Rounds, rep.Duration)
	if len(rep.EtcdSweep) > 0 {
		fmt.Fprintf(w, "\netcd MaxInflightMsgs sweep (64 proposers, 128 B, in-memory):")
		for _, p := range rep.EtcdSweep {
			fmt.Fprintf(w, " %d: %.0f ops/s;", p.Inflight, p.Throughput)
		}
		fmt.Fprintf(w, " best %d is used below\n", rep.EtcdInflight)
	}
	for i := range rep.Variants {
		v := &rep.Variants[i]
		fmt.Fprintf(w, "\n== %s ==\n", variantTitles[v.Name])
		for _, n := range v.Notes {
			fmt.Fprintln(w, "note:", n)
		}
		if len(v.Results) == 0 {
			continue
		}
		printTable(w, rep.rows(v))
		if rr := rep.ratioRows(v); len(rr) > 1 {
			fmt.Fprintln(w, "\nraftgo relative to each other library (throughput: higher is better; latency and allocs: lower is better)")
			printTable(w, rr)
		}
		if v.Name == "durable" {
			rep.diskBound(w, v, false)
		}
	}
	fmt.Fprintln(w, "\nSettings (fairness notes):")
	for _, n := range fairnessNotes(rep) {
		fmt.Fprintln(w, "  - "+n)
	}
}

// diskBound prints, for raftgo on the durable variant, the disk's ceiling
// (fsync rate x mean entries per write) and the share of it reached, for
// two sync rates: one writer alone appending and fsyncing (probed once),
// and one writer of three syncing at once, as the cluster's three nodes do
// on this one disk, each writing in place and fdatasyncing as filestorage
// does (probed before every round, so it follows the disk's drift).
func (rep *report) diskBound(w io.Writer, v *variantResult, md bool) {
	if rep.FsyncPerSec == 0 {
		return
	}
	var lines []string
	for _, wl := range v.workloads() {
		r := v.find("raftgo", wl.clients, wl.size)
		if r == nil || r.Batch == 0 {
			continue
		}
		bound := rep.FsyncPerSec * r.Batch
		l := fmt.Sprintf("%s: %.1f entries/write, %.0f writes/s; alone %.0f fsync/s -> ceiling %.0f ops/s, reached %.0f%%",
			wl, r.Batch, r.WritesSec, rep.FsyncPerSec, bound, 100*r.Throughput/bound)
		if r.SharedSyncs > 0 {
			shared := r.SharedSyncs * r.Batch
			l += fmt.Sprintf("; shared by 3 writers %.0f in-place syncs/s each -> ceiling %.0f ops/s, reached %.0f%%", r.SharedSyncs, shared, 100*r.Throughput/shared)
		}
		if r.SizedSyncs > 0 {
			sized := r.SizedSyncs * r.Batch
			l += fmt.Sprintf("; at the mean write size (%.1f KiB) %.0f syncs/s each -> ceiling %.0f ops/s, reached %.0f%%", r.WriteBytes/1024, r.SizedSyncs, sized, 100*r.Throughput/sized)
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return
	}
	if md {
		fmt.Fprintf(w, "\nDisk ceiling (fsync rate x raftgo's mean entries per leader write; this disk: %.0f fsyncs/s for a lone 4 KiB append+fsync writer, and the per-writer rate with three writers at once each writing 4 KiB in place and calling fdatasync, probed before each round; and that rate again with writes of raftgo's mean write size, probed after raftgo's turn, since a large write is bound by bandwidth, not by the sync rate):\n\n", rep.FsyncPerSec)
		for _, l := range lines {
			fmt.Fprintln(w, "- "+l)
		}
		return
	}
	fmt.Fprintf(w, "\ndisk ceiling (fsync rate x entries per write):\n")
	for _, l := range lines {
		fmt.Fprintln(w, "  "+l)
	}
}

func (rep *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "Command: `%s`  \n", rep.Command)
	fmt.Fprintf(w, "Machine: %s/%s, %d CPUs, %s. %d rounds of %s per contender and workload, contenders alternating; medians of rounds.\n",
		rep.GoOS, rep.GoArch, rep.CPUs, rep.Go, rep.Rounds, rep.Duration)
	if len(rep.EtcdSweep) > 0 {
		fmt.Fprintf(w, "\netcd raft MaxInflightMsgs sweep (64 proposers, 128 B, in-memory):\n\n| MaxInflightMsgs | ops/s |\n| ---: | ---: |\n")
		for _, p := range rep.EtcdSweep {
			fmt.Fprintf(w, "| %d | %.0f |\n", p.Inflight, p.Throughput)
		}
		fmt.Fprintf(w, "\nThe best setting, %d, is used for etcd in every table below.\n", rep.EtcdInflight)
	}
	for i := range rep.Variants {
		v := &rep.Variants[i]
		fmt.Fprintf(w, "\n### %s\n\n", variantTitles[v.Name])
		for _, n := range v.Notes {
			fmt.Fprintf(w, "Note: %s.\n\n", n)
		}
		if len(v.Results) == 0 {
			continue
		}
		markdownTable(w, rep.rows(v))
		if rr := rep.ratioRows(v); len(rr) > 1 {
			fmt.Fprintf(w, "\nraftgo relative to the others (throughput: higher is better; latency and allocations: lower is better):\n\n")
			markdownTable(w, rr)
		}
		if v.Name == "durable" {
			rep.diskBound(w, v, true)
		}
	}
	fmt.Fprintf(w, "\nSettings:\n\n")
	for _, n := range fairnessNotes(rep) {
		fmt.Fprintln(w, "- "+n)
	}
}

// fairnessNotes states how each contender is set up.
func fairnessNotes(rep *report) []string {
	notes := []string{
		"All: 3 voting nodes in one process; every proposal goes to the leader and returns when the leader's state machine (a counter) has applied it. Each proposer allocates a fresh command per proposal carrying an 8-byte request ID, so every library pays the same for it. allocs/op and B/op are process-wide heap allocation deltas (runtime.MemStats) divided by completed proposals, so they include the followers' work and the harness's command buffer.",
		"All: snapshot every 8192 applied entries; in-memory variant messages are handed over in-process without serialization.",
		"raftgo: DefaultConfig (10 ms ticks, election 20 ticks, heartbeat 3 ticks, PreVote and CheckQuorum on, MaxSizePerMsg 1 MiB, MaxInflightMsgs 256, MaxInflightBytes 32 MiB, MaxUncommittedBytes 64 MiB, MaxApplyBatchBytes 4 MiB, TrailingEntries 1024); raft.MemoryStorage and raft.Network (in-memory variant).",
		"hashicorp/raft v1.8.0: DefaultConfig (HeartbeatTimeout/ElectionTimeout 1 s, CommitTimeout 50 ms, MaxAppendEntries 64, BatchApplyCh off, TrailingLogs 10240, SnapshotThreshold 8192) except SnapshotInterval 250 ms (the default 120 s lets the in-memory log grow by millions of entries between threshold checks, and the GC cost of that heap falls on every contender in the process), null logger; InmemStore + InmemSnapshotStore + InmemTransport (in-memory variant), raft-boltdb/v2 v2.3.1 with fsync (NoSync false) behind raft.NewLogCache(512) + FileSnapshotStore (durable variant), NetworkTransport via NewTCPTransport on 127.0.0.1 with a pool of 3 connections (TCP variant). The module pins github.com/hashicorp/go-metrics to v0.5.4 because raft-boltdb/v2 v2.3.1 imports its compat package, which later versions dropped.",
	}
	if rep.EtcdInflight > 0 {
		notes = append(notes, fmt.Sprintf("etcd raft v3.7.0: raft.Node driven by the loop from its package documentation (persist to raft.MemoryStorage, send, apply, Advance), 10 ms ticks, ElectionTick 20, HeartbeatTick 3, PreVote and CheckQuorum on, MaxSizePerMsg 1 MiB, MaxCommittedSizePerReady 4 MiB, MaxInflightMsgs %d (best of the sweep), no AsyncStorageWrites; applied entries are matched to waiting proposers by request ID (etcd returns no per-proposal result); in-process inbox of 4096 per node, dropped when full, like raftgo's Network.", rep.EtcdInflight))
	}
	if rep.FsyncPerSec > 0 {
		notes = append(notes, "Durable variant: each library's files in a fresh temporary directory on the same disk; fsync on for both.")
	}
	return notes
}
