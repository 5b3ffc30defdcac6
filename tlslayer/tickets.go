package tlslayer

import (
	"crypto/rand"
	"crypto/tls"
	"sync"
	"sync/atomic"
	"time"
)

// ticketKeyPeriod is how long one key seals new TLS session tickets. The key
// before it still opens tickets, so a ticket resumes a session for at most
// two periods (RFC 8446 4.6.1 lets a server refuse any ticket; a refused one
// costs the client one full handshake).
const ticketKeyPeriod = time.Hour

// ticketKeys owns the session ticket keys of one tls.Config: a fresh random
// key every period, the previous one kept for opening, older ones dropped.
// crypto/tls's own rotation would accept tickets for seven days.
type ticketKeys struct {
	cfg    *tls.Config
	period time.Duration
	next   atomic.Int64 // unix nanoseconds of the next rotation
	mu     sync.Mutex   // serialises rotations
	newest [32]byte     // guarded by mu
}

func newTicketKeys(cfg *tls.Config, period time.Duration) *ticketKeys {
	return &ticketKeys{cfg: cfg, period: period}
}

// rotateIfDue installs a new key when the current one is older than the
// period. It is called on every handshake; the common case is one atomic
// load.
func (k *ticketKeys) rotateIfDue(now time.Time) {
	if now.UnixNano() < k.next.Load() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.UnixNano() < k.next.Load() {
		return
	}
	prev := k.newest
	first := k.next.Load() == 0
	_, _ = rand.Read(k.newest[:]) // crypto/rand.Read never fails (it crashes the program instead)
	keys := [][32]byte{k.newest}
	if !first {
		keys = append(keys, prev)
	}
	k.cfg.SetSessionTicketKeys(keys)
	k.next.Store(now.Add(k.period).UnixNano())
}
