package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/console/password"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// Session lifetimes: a session ends 8 hours after sign-in, or after 30
// minutes without a request, whichever comes first.
const (
	sessionMaxAge  = 8 * time.Hour
	sessionIdle    = 30 * time.Minute
	maxSessions    = 1024 // oldest evicted beyond this
	cookieName     = "dicomedge_console"
	cookieNameTLS  = "__Host-dicomedge_console" // RFC 6265bis: Secure, Path=/, no Domain
	loginCSRFName  = "dicomedge_login_csrf"
	csrfField      = "csrf"
	maxFormBytes   = 16 << 10
	maxUserNameLen = 64
)

// Login rate limit per source address: a burst of 5 attempts, then one
// every 12 s (5 a minute). Verifying a password costs 64 MiB and tens of
// milliseconds of argon2id; at most two run at once.
const (
	loginBurst      = 5
	loginRefill     = 12 * time.Second
	maxLimited      = 4096 // sources tracked; the idle ones are forgotten first
	maxVerifyingNow = 2
)

// session is one signed-in person.
type session struct {
	id      string
	csrf    string
	user    string        // password login
	client  *audit.Client // certificate login
	role    string
	created time.Time
	seen    time.Time
}

func (s *session) name() string {
	if s.user != "" {
		return s.user
	}
	if s.client != nil {
		if s.client.CN != "" {
			return s.client.CN
		}
		return s.client.Subject
	}
	return "?"
}

type sessions struct {
	mu     sync.Mutex
	byID   map[string]*session
	byCert map[string]*session // certificate sessions by fingerprint
}

func newToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("console: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create stores s as a new session and returns a copy of it for the
// request that made it (see get).
func (ss *sessions) create(s *session, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.byID == nil {
		ss.byID, ss.byCert = map[string]*session{}, map[string]*session{}
	}
	if len(ss.byID) >= maxSessions {
		ss.expireLocked(now)
	}
	for len(ss.byID) >= maxSessions {
		var oldest *session
		for _, o := range ss.byID {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		ss.dropLocked(oldest)
	}
	s.id, s.csrf, s.created, s.seen = newToken(), newToken(), now, now
	ss.byID[s.id] = s
	if s.client != nil {
		ss.byCert[s.client.Fingerprint] = s
	}
	return copyOf(s)
}

func (ss *sessions) dropLocked(s *session) {
	delete(ss.byID, s.id)
	if s.client != nil && ss.byCert[s.client.Fingerprint] == s {
		delete(ss.byCert, s.client.Fingerprint)
	}
}

func (ss *sessions) expireLocked(now time.Time) {
	for _, s := range ss.byID {
		if !s.live(now) {
			ss.dropLocked(s)
		}
	}
}

func (s *session) live(now time.Time) bool {
	return now.Sub(s.created) < sessionMaxAge && now.Sub(s.seen) < sessionIdle
}

// get returns a copy of the live session id names, touching it. A copy:
// the request sets its role from the policy in force, and concurrent
// requests of the same session must not write one shared session.
func (ss *sessions) get(id string, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return copyOf(ss.touchLocked(ss.byID[id], now))
}

func (ss *sessions) certSession(fp string, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return copyOf(ss.touchLocked(ss.byCert[fp], now))
}

func copyOf(s *session) *session {
	if s == nil {
		return nil
	}
	cp := *s
	return &cp
}

// touchLocked returns s if it is live, marking it seen now; an expired one
// is dropped.
func (ss *sessions) touchLocked(s *session, now time.Time) *session {
	if s == nil {
		return nil
	}
	if !s.live(now) {
		ss.dropLocked(s)
		return nil
	}
	s.seen = now
	return s
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.byID[id]; s != nil {
		ss.dropLocked(s)
	}
}

// limiter is a token bucket per source address.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens  float64
	at      time.Time
	audited time.Time // the last login_failed record written for a rate-limited attempt
}

// allow takes a token for src; it returns false when src has none left, and
// audit says whether this refusal should be recorded (one per refill
// period, so that a flood cannot fill the trail).
func (l *limiter) allow(src string, now time.Time) (ok, audit bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*bucket{}
	}
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxLimited {
			l.forgetLocked(now)
		}
		b = &bucket{tokens: loginBurst, at: now}
		l.buckets[src] = b
	}
	b.tokens = min(loginBurst, b.tokens+float64(now.Sub(b.at))/float64(loginRefill))
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, true
	}
	if now.Sub(b.audited) >= loginRefill {
		b.audited = now
		return false, true
	}
	return false, false
}

// forgetLocked drops the buckets that are full again, then, if that is not
// enough, the least recently used half.
func (l *limiter) forgetLocked(now time.Time) {
	for k, b := range l.buckets {
		if now.Sub(b.at) >= loginBurst*loginRefill {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < maxLimited {
		return
	}
	type kv struct {
		k  string
		at time.Time
	}
	all := make([]kv, 0, len(l.buckets))
	for k, b := range l.buckets {
		all = append(all, kv{k, b.at})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	for _, e := range all[:len(all)/2] {
		delete(l.buckets, e.k)
	}
}

// sourceOf is what the limit is kept per: the client's IPv4 address, or
// the /64 of its IPv6 address. A host (or its network) is given a whole
// /64 and may use any address in it, so a limit per IPv6 address would let
// one source make 5 attempts per address, without end.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// authenticator checks passwords against the policy's users.
type authenticator struct {
	verifying chan struct{}
	// dummy is verified for an unknown user, so that a wrong user name
	// takes as long as a wrong password. Made at the first such login, not
	// at start: argon2id takes a moment the edge's start should not wait.
	dummy func() *password.Hashed
}

func newAuthenticator() *authenticator {
	return &authenticator{verifying: make(chan struct{}, maxVerifyingNow), dummy: sync.OnceValue(func() *password.Hashed {
		h, err := password.Hash(newToken())
		if err != nil {
			return nil
		}
		p, _ := password.Parse(h)
		return p
	})}
}

// check returns the role of name if pw is its password.
func (a *authenticator) check(c *policy.Console, name, pw string) (string, bool) {
	a.verifying <- struct{}{}
	defer func() { <-a.verifying }()
	var user *policy.ConsoleUser
	if c != nil {
		for i := range c.Users {
			if subtle.ConstantTimeCompare([]byte(c.Users[i].Name), []byte(name)) == 1 {
				user = &c.Users[i]
			}
		}
	}
	if user == nil {
		if d := a.dummy(); d != nil {
			d.Verify(pw)
		}
		return "", false
	}
	h, err := password.Parse(user.PasswordHash)
	if err != nil || !h.Verify(pw) {
		return "", false
	}
	return user.Role, true
}

// certRole is the role of a certificate login: that of the user block its
// CN names, else viewer.
func certRole(c *policy.Console, cn string) string {
	if c != nil {
		for _, u := range c.Users {
			if u.Name == cn {
				return u.Role
			}
		}
	}
	return policy.RoleViewer
}

// certClient describes the verified client certificate of r, or nil.
func certClient(r *http.Request) *audit.Client {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	id := tlslayer.IdentityFromCertificate(r.TLS.VerifiedChains[0][0])
	return &audit.Client{Subject: id.Subject, CN: id.CN, DNS: id.DNS, URI: id.URI, Email: id.Email,
		Fingerprint: id.Fingerprint, Issuer: id.Issuer, NotAfter: id.NotAfter}
}

func tokensEqual(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
