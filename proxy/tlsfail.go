package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// tls.failed and connection.refused records are written before anyone is
// authenticated, so an attacker could otherwise fill the audit trail with
// them (and, with on_full=block, stall the records of real associations).
// They are limited per source with a token bucket (one limiter per event);
// what is held back is counted and written as one summary record per
// source and window.
const (
	tlsFailBurst      = 10              // records a source may cause at once
	tlsFailEvery      = 6 * time.Second // then one more per this interval
	tlsFailWindow     = time.Minute     // suppressed counts are summarised this often
	tlsFailMaxSources = 1024            // sources tracked; the rest share one bucket
	// TLSFailSuppressedReason is the reason of a summary tls.failed or
	// connection.refused record.
	TLSFailSuppressedReason = "suppressed"
)

type failBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
	reasons    map[string]int
}

// tlsFailLimiter decides which records of one event (tls.failed,
// connection.refused) are written.
type tlsFailLimiter struct {
	event     string
	mu        sync.Mutex
	sources   map[netip.Prefix]*failBucket
	overflow  failBucket // sources beyond tlsFailMaxSources
	timer     *time.Timer
	lastSweep time.Time
	emit      func(audit.Event)
}

func newTLSFailLimiter(emit func(audit.Event)) *tlsFailLimiter {
	return newSourceLimiter(audit.EventTLSFailed, emit)
}

func newSourceLimiter(event string, emit func(audit.Event)) *tlsFailLimiter {
	return &tlsFailLimiter{event: event, sources: map[netip.Prefix]*failBucket{}, emit: emit}
}

// sourceKey groups an IPv6 source by its /64 (one host's usual share), an
// IPv4 source by itself; an unknown source is the zero prefix.
func sourceKey(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// allow reports whether a record for a handshake or connection from ip
// that failed for reason is written now; if not, it is counted for the summary.
func (l *tlsFailLimiter) allow(ip netip.Addr, reason string) bool {
	now := time.Now()
	key := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[key]
	if b == nil {
		if len(l.sources) >= tlsFailMaxSources {
			l.sweepLocked(now)
		}
		if len(l.sources) < tlsFailMaxSources {
			b = &failBucket{tokens: tlsFailBurst, last: now}
			l.sources[key] = b
		} else {
			b = &l.overflow
			if b.last.IsZero() {
				b.tokens, b.last = tlsFailBurst, now
			}
		}
	}
	b.tokens = min(tlsFailBurst, b.tokens+float64(now.Sub(b.last))/float64(tlsFailEvery))
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	b.suppressed++
	if b.reasons == nil {
		b.reasons = map[string]int{}
	}
	if len(b.reasons) < 16 || b.reasons[reason] > 0 { // reasons are a small fixed set; bounded anyway
		b.reasons[reason]++
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(tlsFailWindow, l.flush)
	}
	return false
}

// sweepLocked forgets sources whose bucket has refilled and holds nothing
// to report, at most once per tlsFailEvery.
func (l *tlsFailLimiter) sweepLocked(now time.Time) {
	if now.Sub(l.lastSweep) < tlsFailEvery {
		return
	}
	l.lastSweep = now
	for k, b := range l.sources {
		if b.suppressed == 0 && b.tokens+float64(now.Sub(b.last))/float64(tlsFailEvery) >= tlsFailBurst {
			delete(l.sources, k)
		}
	}
}

// flush writes one summary record per source with suppressed records.
func (l *tlsFailLimiter) flush() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	var out []audit.Event
	summarise := func(remote string, b *failBucket) {
		if b.suppressed == 0 {
			return
		}
		reasons := make([]string, 0, len(b.reasons))
		for r, n := range b.reasons {
			reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
		}
		slices.Sort(reasons)
		out = append(out, audit.Event{Event: l.event, Remote: remote, Reason: TLSFailSuppressedReason,
			Detail: fmt.Sprintf("suppressed %d %s records from %s (more than %d at once, then one per %v); by reason: %s",
				b.suppressed, l.event, remote, tlsFailBurst, tlsFailEvery, strings.Join(reasons, ", "))})
		b.suppressed, b.reasons = 0, nil
	}
	for k, b := range l.sources {
		remote := "unknown"
		if k.IsValid() {
			remote = k.Addr().String()
			if k.Addr().Is6() {
				remote = k.String()
			}
		}
		summarise(remote, b)
	}
	summarise("other-sources", &l.overflow)
	l.sweepLocked(time.Now())
	l.mu.Unlock()
	for _, e := range out {
		l.emit(e)
	}
}
