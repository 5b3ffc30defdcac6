package spool

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// dirSyncer is the group commit of one queue directory: every writer that
// renamed a file into it waits for an fsync of the directory that started
// after its rename, and the writers that arrive while one fsync runs share
// the next. A burst of N concurrent commits costs about two directory
// fsyncs instead of N.
type dirSyncer struct {
	dir   *os.File
	count *atomic.Int64 // fsyncs done
	// started numbers the fsyncs as they begin; done is the number of the
	// last one that succeeded. One runs at a time, so every fsync numbered
	// at most done has completed: a change made before started was read
	// is durable once done passes what was read. failed is the number of
	// the last fsync that failed: after a write error the kernel drops the
	// dirty blocks rather than retry them, so a change made before a
	// failed fsync is never proven durable by a later one.
	started, done, failed atomic.Uint64
	mu                    sync.Mutex
	next                  *syncRound // the round that collects waiters; nil = none yet
	running               bool
}

type syncRound struct {
	done chan struct{}
	err  error
}

func newDirSyncer(path string, count *atomic.Int64) (*dirSyncer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &dirSyncer{dir: f, count: count}, nil
}

// syncDirFile fsyncs a queue directory (tests make it fail).
var syncDirFile = (*os.File).Sync

func (d *dirSyncer) fsync() error {
	d.count.Add(1)
	n := d.started.Add(1)
	err := syncDirFile(d.dir)
	if err != nil {
		d.failed.Store(n)
	} else {
		d.done.Store(n)
	}
	return err
}

// sync returns once an fsync of the directory that began after the call
// has completed.
func (d *dirSyncer) sync() error {
	d.mu.Lock()
	r := d.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		d.next = r
	}
	if d.running {
		d.mu.Unlock()
		<-r.done
		return r.err
	}
	// Lead: run this round; the writers that gather behind it meanwhile
	// get the next one, led from a goroutine so this caller returns now.
	d.running = true
	d.next = nil
	d.mu.Unlock()
	r.err = d.fsync()
	close(r.done)
	d.mu.Lock()
	if nr := d.next; nr != nil {
		d.next = nil
		go d.lead(nr)
	} else {
		d.running = false
	}
	d.mu.Unlock()
	return r.err
}

// lead runs round r and the rounds that gather behind it.
func (d *dirSyncer) lead(r *syncRound) {
	for r != nil {
		r.err = d.fsync()
		close(r.done)
		d.mu.Lock()
		r = d.next
		d.next = nil
		if r == nil {
			d.running = false
		}
		d.mu.Unlock()
	}
}

func (d *dirSyncer) close() { d.dir.Close() }
