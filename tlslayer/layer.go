package tlslayer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

const acmeTLSALPN = "acme-tls/1" // RFC 8737

// state is one immutable load of everything Config names; a reload builds a
// new one and swaps the pointer, so a handshake sees one consistent state.
type state struct {
	cfg    Config
	prof   profile
	cert   *tls.Certificate // nil with ACME
	pool   *x509.CertPool
	cas    []*x509.Certificate
	crls   map[string]*crlSet // by issuer raw subject
	stamp  string             // sizes and mtimes of the files loaded
	tlsCfg *tls.Config        // what GetConfigForClient hands out
	chains chainCache         // client chains verified under this state (chaincache.go)
	ids    identities         // the Identity of each leaf described (chaincache.go)
}

func newLayer(ctx context.Context, cfg Config) (*Layer, error) {
	l := &Layer{log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	if cfg.ACME != nil {
		if cfg.CertFile != "" || cfg.KeyFile != "" {
			return nil, errors.New("tls: use either cert_file/key_file or acme, not both")
		}
		m, err := newACMEManager(ctx, cfg, l.log.Named("acme"))
		if err != nil {
			return nil, err
		}
		l.acme = m
	}
	st, err := l.load(cfg)
	if err != nil {
		if l.acme != nil {
			l.acme.close()
		}
		return nil, err
	}
	l.st.Store(st)
	l.base = &tls.Config{
		// The real settings come per handshake from the current state; the
		// outer bounds here only matter if a caller bypasses the callback.
		// The session ticket keys live here, not in the per-state configs,
		// so that tickets survive a reload (which the checks in
		// VerifyConnection re-judge) and rotate on their own clock.
		MinVersion:         tls.VersionTLS12,
		ClientAuth:         tls.RequireAndVerifyClientCert,
		GetConfigForClient: l.configForClient,
	}
	l.tickets = newTicketKeys(l.base, ticketKeyPeriod)
	l.tickets.rotateIfDue(time.Now())
	interval := cfg.PollInterval
	if interval == 0 {
		interval = 2 * time.Second
	}
	if interval > 0 {
		go l.watch(interval)
	} else {
		close(l.done)
	}
	return l, nil
}

// load reads every file cfg names and builds a state; it changes nothing.
func (l *Layer) load(cfg Config) (*state, error) {
	prof, err := lookupProfile(cfg.Profile)
	if err != nil {
		return nil, err
	}
	if len(cfg.ClientCAFiles) == 0 {
		return nil, errors.New("tls: client_ca is required: every client must present a certificate chaining to one of these CAs")
	}
	st := &state{cfg: cfg, prof: prof, pool: x509.NewCertPool()}
	for _, f := range cfg.ClientCAFiles {
		data, err := readBounded(f)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %w", err)
		}
		certs, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca %s: %w", f, err)
		}
		for _, c := range certs {
			st.pool.AddCert(c)
			st.cas = append(st.cas, c)
		}
	}
	var crls []*x509.RevocationList
	for _, f := range cfg.CRLFiles {
		data, err := readBounded(f)
		if err != nil {
			return nil, fmt.Errorf("tls: crl: %w", err)
		}
		list, err := parseCRLs(data)
		if err != nil {
			return nil, fmt.Errorf("tls: crl %s: %w", f, err)
		}
		crls = append(crls, list...)
	}
	if st.crls, err = buildCRLSets(st.cas, crls); err != nil {
		return nil, fmt.Errorf("tls: crl: %w", err)
	}
	now := time.Now()
	for _, s := range st.crls {
		if !s.nextUpdate.IsZero() && now.After(s.nextUpdate) {
			l.log.Warn("CRL is past its NextUpdate", "issuer", s.issuer.Subject.String(), "next_update", s.nextUpdate,
				"fail_closed", !cfg.AllowExpiredCRL)
		}
	}
	if cfg.ACME == nil {
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, errors.New("tls: cert_file and key_file (or an acme block) are required")
		}
		pair, err := loadKeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		st.cert = pair
	}
	st.stamp = fileStamp(st.files())
	st.tlsCfg = l.buildConfig(st)
	return st, nil
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := readBounded(certFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file: %w", err)
	}
	keyPEM, err := readBounded(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: key_file: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file %s / key_file %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: cert_file %s: %w", certFile, err)
		}
	}
	return &pair, nil
}

func (st *state) files() []string {
	var fs []string
	fs = append(fs, st.cfg.ClientCAFiles...)
	fs = append(fs, st.cfg.CRLFiles...)
	if st.cfg.CertFile != "" {
		fs = append(fs, st.cfg.CertFile, st.cfg.KeyFile)
	}
	return fs
}

// fileStamp summarises size and modification time of files; a file that
// cannot be stat'ed counts as a change too.
func fileStamp(files []string) string {
	var b strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		b.WriteString(f)
		if err != nil {
			b.WriteString("|missing;")
			continue
		}
		b.WriteString("|" + strconv.FormatInt(fi.Size(), 10) + "|" + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + ";")
	}
	return b.String()
}

// buildConfig is the per-handshake tls.Config of a state.
func (l *Layer) buildConfig(st *state) *tls.Config {
	c := &tls.Config{
		MinVersion:       st.prof.minVersion,
		MaxVersion:       st.prof.maxVersion,
		CipherSuites:     st.prof.suites,
		CurvePreferences: st.prof.curves,
		// A client certificate is required; its chain is verified in
		// VerifyConnection against this state's client CAs (ClientCAs still
		// names them in the CertificateRequest), through the cache of
		// chains already verified (chaincache.go).
		ClientAuth: tls.RequireAnyClientCert,
		ClientCAs:  st.pool,
		// Session resumption is on: crypto/tls calls VerifyConnection after
		// a full handshake and on every resumed session alike, so the chain
		// is verified against the current client CAs, and the CRLs, key
		// usage and key size of this state are applied to each: a
		// certificate revoked (or a CA removed) since its ticket was issued
		// cannot resume. Tickets are sealed with keys rotated hourly
		// (tickets.go).
		VerifyConnection: func(cs tls.ConnectionState) error {
			now := time.Now()
			chains := cs.VerifiedChains
			if chains == nil {
				var err error
				if chains, err = st.verifyClient(cs.PeerCertificates, now); err != nil {
					return err
				}
			}
			err := st.checkChain(chains, now)
			if he, ok := errors.AsType[*HandshakeError](err); ok && len(cs.PeerCertificates) > 0 {
				// The chain verified against the client CAs: the
				// certificate is one of ours, refused for what it says.
				he.Presented, he.Issued, he.chain = cs.PeerCertificates[0], len(chains) > 0, cs.PeerCertificates
			}
			return err
		},
	}
	if st.cfg.VerifyEachHandshake {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if st.cert != nil {
		cert := st.cert
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }
	} else if l.acme != nil {
		c.GetCertificate = l.acme.getCertificate
	}
	return c
}

func (l *Layer) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if l.acme != nil && slices.Contains(hello.SupportedProtos, acmeTLSALPN) {
		// RFC 8737: the validation connection carries only acme-tls/1 and no
		// client certificate; it gets the challenge certificate and nothing
		// else (Handshake then reports ErrACMEChallenge).
		return l.acme.challengeConfig, nil
	}
	l.tickets.rotateIfDue(time.Now())
	return l.st.Load().tlsCfg, nil
}

func (l *Layer) serverConfig() *tls.Config { return l.base }

func (l *Layer) reload(cfg Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (cfg.ACME != nil) != (l.acme != nil) {
		return errors.New("tls: switching between certificate files and ACME needs a restart")
	}
	old := l.st.Load()
	if cfg.ACME != nil && old.cfg.ACME != nil && !sameACME(*cfg.ACME, *old.cfg.ACME) {
		l.log.Warn("changed acme settings take effect after a restart; CAs, CRLs and profile are reloaded now")
	}
	st, err := l.load(cfg)
	if err != nil {
		l.log.Error("TLS reload failed; the previous certificates, CAs and CRLs stay in force", "error", err)
		return err
	}
	l.st.Store(st)
	if cfg.ACME != nil && cfg.ACME.DNS != nil && l.acme.dns != nil {
		// A rotated TSIG key signs the next DNS-01 update; the server, zone
		// and resolvers are fixed in certmagic's solver until a restart.
		d, cur := cfg.ACME.DNS, *l.acme.dns.cfg.Load()
		cur.KeyName, cur.KeyAlg, cur.KeySecret = d.KeyName, d.KeyAlg, d.KeySecret
		l.acme.dns.cfg.Store(&cur)
	}
	l.log.Info("TLS configuration reloaded", "profile", st.prof.name, "client_cas", len(st.cas), "crl_issuers", len(st.crls))
	l.announceCertChange(old, st, "reload")
	return nil
}

func (l *Layer) announceCertChange(old, st *state, why string) {
	if old == nil || old.cert == nil || st.cert == nil || slices.EqualFunc(old.cert.Certificate, st.cert.Certificate, bytesEqual) {
		return
	}
	detail := fmt.Sprintf("edge certificate replaced (%s): subject %q serial %s not_after %s", why,
		st.cert.Leaf.Subject.String(), serialHex(st.cert.Leaf.SerialNumber), st.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	l.log.Info(detail)
	if cb := st.cfg.OnCertRenewed; cb != nil {
		cb(detail)
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// watch polls the files of the current state and reloads when any changes.
// A half-written pair fails to load and is retried at the next tick.
func (l *Layer) watch(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	lastFailed := ""
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		st := l.st.Load()
		stamp := fileStamp(st.files())
		if stamp == st.stamp {
			continue
		}
		l.mu.Lock()
		cur := l.st.Load()
		if cur != st { // a Reload raced us; look again next tick
			l.mu.Unlock()
			continue
		}
		next, err := l.load(cur.cfg)
		if err != nil {
			if stamp != lastFailed {
				l.log.Warn("TLS files changed but do not load; keeping the previous ones", "error", err)
				lastFailed = stamp
			}
			l.mu.Unlock()
			continue
		}
		lastFailed = ""
		l.st.Store(next)
		l.mu.Unlock()
		l.log.Info("TLS files changed on disk; reloaded")
		l.announceCertChange(cur, next, "files changed")
	}
}

func (l *Layer) notAfter() time.Time {
	if st := l.st.Load(); st != nil && st.cert != nil {
		return st.cert.Leaf.NotAfter
	}
	if l.acme != nil {
		return l.acme.notAfter()
	}
	return time.Time{}
}

func (l *Layer) close() error {
	l.closeMu.Do(func() {
		close(l.stop)
		<-l.done
		if l.acme != nil {
			l.acme.close()
		}
	})
	return nil
}

func sameACME(a, b ACMEConfig) bool {
	return slices.Equal(a.Domains, b.Domains) && slices.Equal(a.CARootFiles, b.CARootFiles) &&
		a.Email == b.Email && a.Directory == b.Directory && a.Storage == b.Storage &&
		a.HTTPPort == b.HTTPPort && a.TLSALPNPort == b.TLSALPNPort && a.DisableTLSALPN == b.DisableTLSALPN &&
		sameDNS(a.DNS, b.DNS)
}

// sameDNS compares what a reload cannot change; the TSIG key itself is
// reloaded live.
func sameDNS(a, b *DNSConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Server == b.Server && a.Zone == b.Zone && slices.Equal(a.Resolvers, b.Resolvers) &&
		a.PropagationTimeout == b.PropagationTimeout && a.PropagationDelay == b.PropagationDelay
}
