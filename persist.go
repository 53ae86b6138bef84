package raft

import (
	"sync"
	"sync/atomic"
	"time"
)

// inlineSaveCost is the Save duration under which the loop writes itself
// rather than handing the write to the persister: below it, the two
// goroutine handoffs would cost more than the overlap gains.
const inlineSaveCost = 50 * time.Microsecond

// persister writes the Core's log and hard state to Storage on its own
// goroutine, so the loop keeps stepping acknowledgements and proposals
// while a write is in flight. It commits in groups: everything queued
// during one write goes out in the next Save, with one sync, however many
// Readys it came from. Messages that depend on a write are sent by the
// persister right after that write, in the order the Core produced them.
//
// Storage.Save and Storage.Compact are called only from this goroutine, in
// the order the loop queued them.
type persister struct {
	st    Storage
	send  func([]Message)
	warn  func(msg string, args ...any)
	wake  chan struct{} // capacity 1: work was queued
	ready chan struct{} // capacity 1: results are waiting for the loop
	quit  chan struct{}
	exit  chan struct{}

	// saveCost is a moving average of Save's duration. A
	// storage that answers faster than a goroutine handoff costs (memory,
	// or a disk with a power-safe cache) is written inline by the loop.
	saveCost movingCost

	out []Message // the messages of the jobs being sent, reused

	mu      sync.Mutex
	queue   []persistJob // queued, not yet taken by the writer
	written []persistJob // written, not yet taken by the loop
	err     error        // the write that failed; nothing is written after it
}

// persistJob is one unit of work, in the loop's order: a Ready's durable
// part and the messages that must wait for it, or a compaction.
type persistJob struct {
	rd        Ready // HardState, and Entries when sync is set
	sync      bool
	msgs      []Message // sent once this job and all before it are durable
	compactTo uint64    // if set, the job is Storage.Compact(compactTo)
}

func newPersister(st Storage, send func([]Message), warn func(string, ...any)) *persister {
	p := &persister{
		st:    st,
		send:  send,
		warn:  warn,
		wake:  make(chan struct{}, 1),
		ready: make(chan struct{}, 1),
		quit:  make(chan struct{}),
		exit:  make(chan struct{}),
	}
	// Assume a disk until Saves show otherwise: a slow first write on
	// the loop would stall it, a fast one handed off costs microseconds.
	p.saveCost.Store(int64(inlineSaveCost))
	go p.run()
	return p
}

// save calls Storage.Save and keeps the moving average of its duration.
func (p *persister) save(hs HardState, ents []Entry) error {
	start := time.Now()
	err := p.st.Save(hs, ents)
	p.saveCost.add(time.Since(start))
	return err
}

// fast reports whether Saves have lately been quick enough to do inline.
func (p *persister) fast() bool { return p.saveCost.below(inlineSaveCost) }

// movingCost is a moving average of how long something takes, in
// nanoseconds, that weighs the latest sample by 1/8. The persister and the
// applier use one each to decide whether work is quick enough to do on the
// goroutine at hand rather than hand it over. Only one goroutine adds at a
// time; any may read.
type movingCost struct{ atomic.Int64 }

func (c *movingCost) add(d time.Duration) {
	old := c.Load()
	c.Store(old + (int64(d)-old)/8)
}

func (c *movingCost) below(limit time.Duration) bool { return c.Load() < int64(limit) }

// submit queues a job; it never blocks.
func (p *persister) submit(j persistJob) {
	p.mu.Lock()
	p.queue = append(p.queue, j)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// results returns the jobs written since the last call, in order, and the
// error that stopped the writer, if any.
func (p *persister) results(buf []persistJob) ([]persistJob, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf = append(buf, p.written...)
	clear(p.written)
	p.written = p.written[:0]
	return buf, p.err
}

// stop makes the writer exit after the write in progress, if any; queued
// jobs are dropped, as a crash would drop them (nothing acknowledged them).
func (p *persister) stop() {
	close(p.quit)
	<-p.exit
}

func (p *persister) run() {
	defer close(p.exit)
	var jobs []persistJob
	for {
		select {
		case <-p.wake:
		case <-p.quit:
			return
		}
		p.mu.Lock()
		jobs, p.queue = p.queue, jobs[:0]
		p.mu.Unlock()
		if len(jobs) == 0 {
			continue
		}
		err := p.write(jobs)
		p.mu.Lock()
		if err != nil {
			p.err = err
		} else {
			p.written = append(p.written, jobs...)
		}
		p.mu.Unlock()
		clear(jobs)
		select {
		case p.ready <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// write carries out jobs: consecutive Ready jobs are merged into one Save.
func (p *persister) write(jobs []persistJob) error {
	var (
		hs    HardState
		ents  []Entry
		owned bool // ents was allocated here, not handed out by the Core
		dirty bool
		start int // first job whose messages are not yet sent
	)
	flush := func(upto int) error {
		if dirty {
			if err := p.save(hs, ents); err != nil {
				return err
			}
		}
		// One send for all the jobs written together, with their
		// acceptances folded (see appendMsg): a follower whose write
		// took in many appends answers them all with one message.
		out := p.out[:0]
		for _, j := range jobs[start:upto] {
			for _, m := range j.msgs {
				out = appendMsg(out, m)
			}
		}
		if len(out) > 0 {
			p.send(out)
		}
		clear(out)
		p.out = out[:0]
		start, ents, owned, dirty = upto, nil, false, false
		return nil
	}
	for i, j := range jobs {
		if j.compactTo > 0 {
			if err := flush(i); err != nil {
				return err
			}
			start = i + 1
			if err := p.st.Compact(j.compactTo); err != nil {
				// The log is only longer than it needs to be.
				p.warn("compacting storage", "index", j.compactTo, "err", err)
			}
			continue
		}
		if j.sync {
			dirty = true
			ents, owned = mergeEntries(ents, j.rd.Entries, owned)
		}
		if dirty {
			hs = j.rd.HardState
		}
	}
	return flush(len(jobs))
}

// mergeEntries returns the log suffix that writing a and then b would
// leave: b replaces every entry of a from b's first index on. It appends
// in place only to a slice it allocated itself (owned), never into the
// Core's arrays, which the Core still reads.
func mergeEntries(a, b []Entry, owned bool) ([]Entry, bool) {
	switch {
	case len(b) == 0:
		return a, owned
	case len(a) == 0 || b[0].Index <= a[0].Index:
		return b, false
	}
	keep := int(min(b[0].Index-a[0].Index, uint64(len(a))))
	if !owned {
		out := make([]Entry, keep, 2*(keep+len(b)))
		copy(out, a)
		a = out
	}
	return append(a[:keep], b...), true
}
