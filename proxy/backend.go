package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// errBackendHandshake marks a failed TLS handshake with a backend.
var errBackendHandshake = errors.New("backend TLS handshake")

// dial connects to the backend within the connect timeout (bounded by
// ARTIM), with TLS when the backend has a tls block.
func (r *relay) dial(ctx context.Context, be *policy.Backend, artimDeadline time.Time) (net.Conn, *hookConn, error) {
	timeout := policy.BackendDialTimeout
	if d := time.Until(artimDeadline); d > time.Second && d < timeout {
		timeout = d
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := r.c.s.Dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(dctx, "tcp", be.Address)
	if err != nil {
		return nil, nil, err
	}
	hc := &hookConn{Conn: nc}
	if be.TLS == nil {
		return nc, hc, nil
	}
	tcfg, err := r.c.s.backendTLS.get(r.cfg, r.c.s.current(), be)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	cached := tcfg
	if tcfg.ClientSessionCache != nil && r.c.s.bench.backendSessionsOff.Load() {
		tcfg = tcfg.Clone()
		tcfg.ClientSessionCache = nil
	}
	tc := tls.Client(hc, tcfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%w: %w", errBackendHandshake, err)
	}
	cs := tc.ConnectionState()
	resumed := cs.DidResume
	if !r.c.s.bench.groupNotLearned.Load() {
		r.c.s.backendTLS.learnGroup(r.cfg, be, cached, cs.CurveID)
	}
	r.c.s.Metrics.BackendHandshakes.WithLabelValues(be.Name, strconv.FormatBool(resumed)).Inc()
	r.c.log.Trace("backend TLS handshake", "resumed", resumed)
	return tc, hc, nil
}

// backendTLSCache holds one tls.Config per backend block of the policy in
// force. A reload makes a new *policy.Config with new *policy.Backend values:
// the first dial under it empties the cache, so the cache stays bounded by
// the current policy's backends. An entry is rebuilt when its files' size or
// modification time changed, so a rotated client certificate or CA bundle
// is used from the next dial without a SIGHUP.
//
// Each backend's configs share one TLS session cache (tickets, and TLS 1.2
// session IDs), so a burst of short associations to a backend costs one
// full handshake: the others resume. The cache belongs to the backend's
// TLS as written and as on disk (tlsIdentity): a reload that leaves them
// as they were keeps it, one that changes them (another address, name,
// CA, certificate or profile), or a rotated file, starts afresh, so no
// session made under the old trust is resumed under the new.
type backendTLSCache struct {
	mu       sync.Mutex
	cfg      *policy.Config
	m        map[*policy.Backend]backendTLSEntry
	sessions map[string]tls.ClientSessionCache // by tlsIdentity, those in use under cfg
	previous map[string]tls.ClientSessionCache // under the policy before cfg, carried over on first use
}

// learnGroup makes be's config offer only the key-exchange group be's
// server chose from the profile's groups, so that the next handshakes send
// their key share in it. crypto/tls sends its shares for the groups it
// prefers (X25519MLKEM768 and X25519), whatever the order configured; a
// backend that takes neither (OpenSSL 3.0 with DCMTK's group list takes
// P-256) answers every ClientHello with a HelloRetryRequest: another round
// trip and another key generation, on resumed sessions too. The group was
// the server's choice among all the profile offers, in a handshake the
// server authenticated, so offering it alone gives the same group without
// the retry; after groupRelearn, or a reload or changed file, the profile's
// groups are offered again.
func (c *backendTLSCache) learnGroup(cfg *policy.Config, be *policy.Backend, used *tls.Config, group tls.CurveID) {
	if group == 0 || !slices.Contains(used.CurvePreferences, group) || len(used.CurvePreferences) == 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[be]
	if cfg != c.cfg || !ok || e.tc != used {
		return // not the cached config (a reload, or a rebuilt entry)
	}
	tc := used.Clone()
	tc.CurvePreferences = []tls.CurveID{group}
	e.full, e.tc, e.relearn = used, tc, time.Now().Add(groupRelearn)
	c.m[be] = e
}

// backendSessions bounds the TLS sessions kept per backend: as many as
// associations to it may start at once without waiting for each other's
// tickets.
const backendSessions = 64

// sessionsFor returns the session cache for the backend TLS identity id.
func (c *backendTLSCache) sessionsFor(id string) tls.ClientSessionCache {
	if sc := c.sessions[id]; sc != nil {
		return sc
	}
	sc := c.previous[id]
	if sc == nil {
		sc = tls.NewLRUClientSessionCache(backendSessions)
	}
	if c.sessions == nil {
		c.sessions = map[string]tls.ClientSessionCache{}
	}
	c.sessions[id] = sc
	return sc
}

// tlsIdentity is what a backend's TLS sessions depend on: its name and
// address, the tls block's settings, the profile and the files' state.
func tlsIdentity(profile string, be *policy.Backend, files string) string {
	t := be.TLS
	return strings.Join([]string{be.Name, be.Address, profile, t.ServerName, strings.Join(t.CA, "\x00"), t.CertFile, t.KeyFile, files}, "\x00")
}

type backendTLSEntry struct {
	tc    *tls.Config
	files string // backendTLSFiles when tc was built
	// full is the config with the profile's groups while tc offers only
	// the group the backend chose (learnGroup), until relearn.
	full    *tls.Config
	relearn time.Time
}

// groupRelearn is how long the edge offers a backend only the group it
// chose before offering the profile's groups again (a backend that has
// learned a better one, say the hybrid post-quantum group, then gets it).
const groupRelearn = time.Hour

// backendTLSFiles is the name, size and modification time of be's CA,
// certificate and key files.
func backendTLSFiles(be *policy.Backend) string {
	var b strings.Builder
	for _, f := range append(append([]string(nil), be.TLS.CA...), be.TLS.CertFile, be.TLS.KeyFile) {
		if f == "" {
			continue
		}
		b.WriteString(f)
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "|%d|%d", fi.Size(), fi.ModTime().UnixNano())
		}
		b.WriteByte(';')
	}
	return b.String()
}

// get returns be's tls.Config under cfg; current is the policy in force (an
// association established before a reload builds its config uncached).
func (c *backendTLSCache) get(cfg, current *policy.Config, be *policy.Backend) (*tls.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg != c.cfg {
		if cfg != current {
			return backendTLSConfig(cfg.TLS.Profile, be)
		}
		c.cfg, c.m = cfg, map[*policy.Backend]backendTLSEntry{}
		c.previous, c.sessions = c.sessions, nil
	}
	files := backendTLSFiles(be)
	if e, ok := c.m[be]; ok && e.files == files {
		if e.full != nil && time.Now().After(e.relearn) {
			e.tc, e.full = e.full, nil
			c.m[be] = e
		}
		return e.tc, nil
	}
	tc, err := backendTLSConfig(cfg.TLS.Profile, be)
	if err != nil {
		return nil, err
	}
	tc.ClientSessionCache = c.sessionsFor(tlsIdentity(cfg.TLS.Profile, be, files))
	c.m[be] = backendTLSEntry{tc: tc, files: files}
	return tc, nil
}

func (c *backendTLSCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// backendTLSConfig builds the client side of the edge towards be: the
// tls.profile's versions, suites and groups (the same PS3.15 profile the
// listener enforces), be's roots, client certificate and server name.
func backendTLSConfig(profile string, be *policy.Backend) (*tls.Config, error) {
	t := be.TLS
	return tlslayer.OutboundConfig(tlslayer.Outbound{Profile: profile, CAFiles: t.CA, ServerName: t.ServerName,
		Address: be.Address, CertFile: t.CertFile, KeyFile: t.KeyFile})
}
