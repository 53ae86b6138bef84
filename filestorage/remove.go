package filestorage

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// remover deletes dead segments, oldest first, each deletion synced before
// the next, so a crash never leaves a newer segment without an older one
// that recovery still needs (a hole). Open runs it on a goroutine of its
// own: deleting a large file can take tens of milliseconds (the file
// system frees its blocks, and on a disk mounted with discard trims them),
// and a Compact that waited for it held up every Save queued behind it.
// Tests run it inline, so every file operation happens in a fixed order.
//
// Up to maxFree dead segments are not deleted but renamed to free files,
// for createSegment to write the next segments into: appends over blocks
// already allocated and written sync without a journal commit, as over
// preallocated zeros, without writing the zeros first. A free file's name
// keeps the salt of its records, which the next segment written into it
// needs to tell them from its own (see record.go).
//
// A segment is forgotten by the Storage when it is queued. A deletion that
// fails stays at the head of the queue with everything after it, and is
// retried at the next kick (every Compact, rollover and log-discarding
// snapshot kicks): deleting nothing newer meanwhile keeps the files a
// contiguous run of segments, which is all recovery needs if the process
// stops first.
type remover struct {
	fs      fileSystem
	dir     string
	async   bool
	maxFree int // free files to keep; 0 deletes every dead segment

	mu      sync.Mutex
	queue   []deadFile // oldest first
	free    []deadFile // renamed, ready for reuse
	running bool
	failed  error      // why the last attempt failed; nil after a success
	idle    *sync.Cond // signalled when running turns false
}

// deadFile is a dead segment's file, or a free file, and the salt of the
// records in it.
type deadFile struct {
	path string
	salt uint32
}

// defaultMaxFree is how many dead segments are kept for reuse. One dies for
// each new one in a steady state; the second covers a burst.
const defaultMaxFree = 2

func freeName(seq uint64, salt uint32) string { return fmt.Sprintf("%016x-%08x.free", seq, salt) }

// parseFreeName returns the salt a free file's name records.
func parseFreeName(name string) (uint32, bool) {
	base, ok := strings.CutSuffix(name, ".free")
	seqHex, saltHex, ok2 := strings.Cut(base, "-")
	if !ok || !ok2 || len(seqHex) != 16 || len(saltHex) != 8 {
		return 0, false
	}
	if _, err := strconv.ParseUint(seqHex, 16, 64); err != nil {
		return 0, false
	}
	salt, err := strconv.ParseUint(saltHex, 16, 32)
	return uint32(salt), err == nil
}

func newRemover(fsys fileSystem, dir string, maxFree int) *remover {
	r := &remover{fs: fsys, dir: dir, maxFree: maxFree}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// add queues the segment at path, whose records have salt, for deletion;
// kick starts it.
func (r *remover) add(path string, salt uint32) {
	r.mu.Lock()
	r.queue = append(r.queue, deadFile{path, salt})
	r.mu.Unlock()
}

// addFree makes a free file found at Open available for reuse.
func (r *remover) addFree(f deadFile) {
	r.mu.Lock()
	r.free = append(r.free, f)
	r.mu.Unlock()
}

// takeFree hands out a free file, if there is one; it is the caller's from
// then on.
func (r *remover) takeFree() (deadFile, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.free) == 0 {
		return deadFile{}, false
	}
	f := r.free[len(r.free)-1]
	r.free = r.free[:len(r.free)-1]
	return f, true
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
		dead := r.queue[0]
		keep := len(r.free) < r.maxFree
		r.mu.Unlock()
		var err error
		free := dead
		if seq, ok := parseSegName(filepath.Base(dead.path)); keep && ok {
			free.path = filepath.Join(r.dir, freeName(seq, dead.salt))
			err = r.fs.Rename(dead.path, free.path)
		} else {
			keep = false
			err = r.fs.Remove(dead.path)
		}
		if err == nil {
			err = r.fs.SyncDir(r.dir)
		}
		r.mu.Lock()
		r.failed = err
		if err != nil {
			break
		}
		if keep {
			r.free = append(r.free, free)
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
