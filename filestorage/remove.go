package filestorage

import "sync"

// remover deletes dead segments, oldest first, each deletion synced before
// the next, so a crash never leaves a newer segment without an older one
// that recovery still needs (a hole). Open runs it on a goroutine of its
// own: deleting a large file can take tens of milliseconds (the file
// system frees its blocks, and on a disk mounted with discard trims them),
// and a Compact that waited for it held up every Save queued behind it.
// Tests run it inline, so every file operation happens in a fixed order.
//
// A segment is forgotten by the Storage when it is queued. A deletion that
// fails stays at the head of the queue with everything after it, and is
// retried at the next kick (every Compact, rollover and log-discarding
// snapshot kicks): deleting nothing newer meanwhile keeps the files a
// contiguous run of segments, which is all recovery needs if the process
// stops first.
type remover struct {
	fs    fileSystem
	dir   string
	async bool

	mu      sync.Mutex
	queue   []string // paths, oldest first
	running bool
	failed  error      // why the last attempt failed; nil after a success
	idle    *sync.Cond // signalled when running turns false
}

func newRemover(fsys fileSystem, dir string) *remover {
	r := &remover{fs: fsys, dir: dir}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// add queues path for deletion; kick starts it.
func (r *remover) add(path string) {
	r.mu.Lock()
	r.queue = append(r.queue, path)
	r.mu.Unlock()
}

// kick deletes what is queued: inline, before returning; otherwise on a
// goroutine, started unless one is running. It returns the error of the
// last failed attempt: inline this one's, otherwise possibly an earlier
// one's (nil once a deletion succeeded since).
func (r *remover) kick() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 || r.running {
		return r.failed
	}
	r.running = true
	if !r.async {
		r.drainLocked()
		return r.failed
	}
	go func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.drainLocked()
	}()
	return r.failed
}

// drainLocked deletes the queue in order until it is empty or a deletion
// fails; r.mu is held, and released around each deletion.
func (r *remover) drainLocked() {
	for len(r.queue) > 0 {
		path := r.queue[0]
		r.mu.Unlock()
		err := r.fs.Remove(path)
		if err == nil {
			err = r.fs.SyncDir(r.dir)
		}
		r.mu.Lock()
		r.failed = err
		if err != nil {
			break
		}
		r.queue = r.queue[1:]
	}
	r.running = false
	r.idle.Broadcast()
}

// wait returns once no deletion is running.
func (r *remover) wait() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.running {
		r.idle.Wait()
	}
}
