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
// A segment is forgotten by the Storage when it is queued. If a deletion
// fails, the remover deletes nothing more until the Storage is opened
// again: the files left are a contiguous run of the oldest segments, which
// recovery reads (their entries are compacted) and queues again. The
// failure is returned by the next call that would queue a deletion (the
// Compact that queued it, or a later one), as a failed deletion was before
// deletions moved off the caller's goroutine.
type remover struct {
	fs    fileSystem
	dir   string
	async bool

	mu      sync.Mutex
	queue   []string // paths, oldest first
	running bool
	failed  error
	idle    *sync.Cond // signalled when running turns false
}

func newRemover(fsys fileSystem, dir string) *remover {
	r := &remover{fs: fsys, dir: dir}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// remove queues path for deletion. Inline, it deletes at once and returns
// the error; on a goroutine, errors stop later deletions instead.
func (r *remover) remove(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.failed
	}
	if !r.async {
		if err := r.removeOne(path); err != nil {
			r.failed = err
			return err
		}
		return nil
	}
	r.queue = append(r.queue, path)
	if !r.running {
		r.running = true
		go r.run()
	}
	return nil
}

func (r *remover) removeOne(path string) error {
	if err := r.fs.Remove(path); err != nil {
		return err
	}
	return r.fs.SyncDir(r.dir)
}

func (r *remover) run() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.queue) > 0 && r.failed == nil {
		path := r.queue[0]
		r.queue = r.queue[1:]
		r.mu.Unlock()
		err := r.removeOne(path)
		r.mu.Lock()
		if err != nil {
			r.failed = err
		}
	}
	r.queue = nil
	r.running = false
	r.idle.Broadcast()
}

// wait returns once no deletion is queued or running.
func (r *remover) wait() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.running {
		r.idle.Wait()
	}
}
