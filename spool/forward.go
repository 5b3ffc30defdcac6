package spool

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/audit"
)

// Sender delivers instances to one backend over whatever protocol it
// speaks (DIMSE C-STORE, STOW-RS). It keeps its connection open between
// calls; Close ends it.
type Sender interface {
	// Send delivers batch in order and returns one error per entry: nil
	// delivered, a PermanentError refused for good (moved to failed/), any
	// other error transient (kept, retried after back-off). An entry after
	// a transient error may be left unsent with that same error.
	Send(ctx context.Context, batch []*Entry) []error
	// Batch bounds one Send call: at most n entries and, beyond the first,
	// bytes in all.
	Batch() (n int, bytes int64)
	Close() error
}

// PermanentError marks a refusal that retrying will not change
// (A-ASSOCIATE-RJ permanent, status 0xA9xx or 0xCxxx, HTTP 4xx other than
// 408/429 and authentication).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError.
func Permanent(err error) error { return &PermanentError{Err: err} }

// IsPermanent reports whether err is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Back-off between attempts after a transient failure.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// idleClose: a sender idle this long closes its connection.
	idleClose = 30 * time.Second
	// rescan: an idle forwarder looks at its queue this often even
	// unwoken, for instances `spool retry` moved back from another process.
	rescan = time.Second
)

// maxReason bounds the text of an error the forwarder keeps (state.json,
// a failed/ sidecar, the audit record): a backend chooses much of it.
const maxReason = 1024

// reason is err's text as the forwarder keeps it: cut to maxReason bytes
// at a character boundary, marked as cut.
func reason(err error) string {
	s := err.Error()
	if len(s) <= maxReason {
		return s
	}
	const more = " [...]"
	return audit.Clip(s, maxReason-len(more), more)
}

// Forward results, the result label of dicomedge_forward_total.
const (
	ResultDelivered = "delivered"
	ResultFailed    = "failed"
	ResultRetry     = "retry"
)

// Forwarder drains one backend's queue through a Sender.
type Forwarder struct {
	Spool   *Spool
	Backend string
	Sender  Sender
	Logger  hclog.Logger
	// MinBackoff and MaxBackoff bound the wait after a transient failure
	// (doubling from Min up to Max); zero = the defaults.
	MinBackoff, MaxBackoff time.Duration
	// Result counts each entry's outcome (dicomedge_forward_total); nil
	// counts nothing.
	Result func(backend, result string)
}

// Run forwards until ctx ends, then closes the Sender.
func (f *Forwarder) Run(ctx context.Context) {
	log := f.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	minB, maxB := f.MinBackoff, f.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB <= 0 {
		maxB = DefaultMaxBackoff
	}
	d, err := f.Spool.dir(f.Backend)
	if err != nil {
		log.Error("spool directory unusable; forwarder stopped", "backend", f.Backend, "error", err)
		return
	}
	defer f.Sender.Close()
	attempts := map[string]int{}
	state := State{}
	if st, err := f.Spool.BackendStats(f.Backend); err == nil {
		state = st.State
	}
	backoff := time.Duration(0)
	idleSince := time.Now()
	connected := false
	wait := func(dur time.Duration) bool {
		t := time.NewTimer(dur)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case <-d.wake:
		}
		return true
	}
	for ctx.Err() == nil {
		batch, err := f.next()
		if err != nil {
			log.Error("reading the spool queue failed", "backend", f.Backend, "error", err)
			if !wait(rescan) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			if connected && time.Since(idleSince) > idleClose {
				_ = f.Sender.Close()
				connected = false
			}
			if !wait(rescan) {
				return
			}
			continue
		}
		connected = true
		f.Spool.markSending(f.Backend, batch, true)
		errs := f.Sender.Send(ctx, batch)
		f.Spool.markSending(f.Backend, batch, false)
		if ctx.Err() != nil {
			return // a send cut short by shutdown proves nothing
		}
		var transient error
		for i, e := range batch {
			err := errs[i]
			switch {
			case err == nil:
				// The record first: a crash between the two resends the
				// instance (the same SOP Instance UID, harmless) rather than
				// leave a delivery out of the trail.
				f.Spool.audit(audit.EventSpoolForwarded, &e.Meta, "")
				if rerr := f.Spool.remove(e); rerr != nil {
					log.Error("removing a delivered instance failed", "backend", f.Backend, "id", e.ID, "error", rerr)
				}
				delete(attempts, e.ID)
				f.count(ResultDelivered)
				state.LastSuccess = time.Now().UTC()
			case IsPermanent(err) && gone(e.Path):
				// Purged or expired while it was sent (and audited as
				// such): the sender found no file, nothing was refused.
				delete(attempts, e.ID)
			case IsPermanent(err):
				e.Meta.Attempts = attempts[e.ID] + 1
				delete(attempts, e.ID)
				why := reason(err)
				f.Spool.audit(audit.EventSpoolFailed, &e.Meta, why)
				if merr := f.Spool.move(e, dirFailed, why); merr != nil {
					log.Error("moving a refused instance to failed/ failed", "backend", f.Backend, "id", e.ID, "error", merr)
				}
				f.count(ResultFailed)
				log.Warn("backend refused an instance for good; moved to failed/", "backend", f.Backend, "sop_instance", e.Meta.SOPInstance, "error", reason(err))
			default:
				// It stays queued; the outcomes after it are acted on
				// all the same (one STOW-RS answer covers the batch): an
				// instance stored is not sent again with it on every
				// retry, one refused for good goes to failed/.
				attempts[e.ID]++
				if transient == nil {
					transient = err
				}
			}
		}
		idleSince = time.Now()
		// The delivered files' old names gone for good, they are emptied.
		if err := f.Spool.settle(f.Backend); err != nil {
			log.Error("emptying delivered instance files failed", "backend", f.Backend, "error", err)
		}
		if transient == nil {
			backoff = 0
			if state.LastError != "" || !state.NextAttempt.IsZero() {
				state.LastError, state.NextAttempt = "", time.Time{}
			}
			f.Spool.setState(f.Backend, state)
			continue
		}
		// Transient: the connection is suspect; back off and start over
		// from the first undelivered entry, keeping arrival order.
		_ = f.Sender.Close()
		connected = false
		f.count(ResultRetry)
		if backoff == 0 {
			backoff = minB
		} else {
			backoff = min(backoff*2, maxB)
		}
		// The wait is drawn between half the back-off and all of it: the
		// edges of a cluster that lost the backend together do not all
		// come back to it at the same instants.
		pause := backoff/2 + rand.N(backoff/2+1)
		state.LastError, state.LastErrorTime = reason(transient), time.Now().UTC()
		state.NextAttempt = state.LastErrorTime.Add(pause)
		f.Spool.setState(f.Backend, state)
		log.Warn("forwarding failed; will retry", "backend", f.Backend, "error", reason(transient), "retry_in", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// gone reports whether no file is at path any more.
func gone(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, os.ErrNotExist)
}

func (f *Forwarder) count(result string) {
	if f.Result != nil {
		f.Result(f.Backend, result)
	}
}

// next returns the oldest queued entries, as many as the Sender takes.
func (f *Forwarder) next() ([]*Entry, error) {
	n, limit := f.Sender.Batch()
	if n <= 0 {
		n = 1
	}
	list, err := f.Spool.list(f.Backend, Queued, n)
	if err != nil || len(list) == 0 {
		return nil, err
	}
	var out []*Entry
	var total int64
	for i := range list {
		e := &list[i]
		if len(out) >= n || (len(out) > 0 && limit > 0 && total+e.Meta.Size > limit) {
			break
		}
		if slices.ContainsFunc(out, func(o *Entry) bool { return o.Meta.SOPInstance == e.Meta.SOPInstance }) {
			// The same instance again (a sender that resent it): one
			// request's answer names instances by UID, so it could not
			// tell the copies apart, and a service that stores one and
			// refuses the other as a duplicate would fail both. It goes
			// in the next request, in its turn.
			break
		}
		out = append(out, e)
		total += e.Meta.Size
	}
	return out, nil
}

// Maintain expires old instances and serves purge requests from
// `dicomedge spool purge` while this process holds the audit log, every
// interval until ctx ends.
func (s *Spool) Maintain(ctx context.Context, interval time.Duration, log hclog.Logger) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.Expire(); err != nil {
			log.Error("spool expiry failed", "error", err)
		} else if n > 0 {
			log.Warn("instances expired in the spool (max_age)", "count", n)
		}
		s.servePurgeRequests(log)
		s.recount()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recount sets the queued bytes from the queues on disk, so that what
// another process removed (`spool purge`, an operator) is freed.
func (s *Spool) recount() {
	names, err := s.Backends()
	if err != nil {
		return
	}
	var disk int64
	for _, b := range names {
		_, bytes, _ := s.Counts(b)
		disk += bytes
	}
	s.queued.Store(disk)
}
