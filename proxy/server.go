package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/spool"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Server is the running edge. Set the exported fields, then call Serve or
// ListenAndServe; Config may be replaced later with Reload.
type Server struct {
	Config  *policy.Config  // required: edge limits, backends, rules
	TLS     *tlslayer.Layer // required: the listener's TLS state
	Audit   *audit.Writer   // optional: nil writes no audit trail
	Logger  hclog.Logger    // optional: nil discards
	Metrics *Metrics        // optional: nil creates one
	// Console, when set, serves the web console on the admin listener
	// beside /metrics, /healthz and /readyz (which stay as they are).
	Console http.Handler
	// AdminTLS, when set, makes the admin listener speak HTTPS as well as
	// plain HTTP (told apart by the first byte), for the console's client
	// certificates; from tlslayer.Layer.AdminConfig.
	AdminTLS *tls.Config
	// Dialer dials backends; nil uses a net.Dialer. Tests use it to observe
	// or break backend connections.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// Spool holds the instances of store-and-forward rules; nil refuses
	// such rules' associations (transient A-ASSOCIATE-RJ).
	Spool *spool.Spool

	cfg    atomic.Pointer[policy.Config]
	once   sync.Once
	log    hclog.Logger
	active atomic.Int64 // established associations, against max_associations
	// preActive counts connections in the TLS handshake or before their
	// A-ASSOCIATE-RQ's decision (preAssociationLimit).
	preActive     atomic.Int64
	awaitHeader   atomic.Int64 // of those, waiting for a PROXY header (limits.go)
	preRefusedN   atomic.Int64
	preRefusedLog atomic.Int64 // unix nanos of the last "refused" log line
	preMu         sync.Mutex
	preSource     map[netip.Prefix]int // pre-association connections per source
	clientMu      sync.Mutex
	clientActive  map[string]int // associations per client (limits.go)
	connID        atomic.Uint64

	tlsFail *tlsFailLimiter // bounds unauthenticated tls.failed records
	refused *tlsFailLimiter // bounds connection.refused records

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	byName    map[string]net.Listener // what each listener name is served on now
	// owned are the listener blocks the Server opened itself
	// (StartListeners), by name; a reload opens, moves and closes them.
	// lnMu serialises StartListeners and reloads.
	lnMu      sync.Mutex
	manage    bool
	owned     map[string]*ownedListener
	conns     map[*conn]struct{}
	admin     *adminServer
	shutdown  atomic.Bool
	listening atomic.Int32
	wg        sync.WaitGroup // one per conn goroutine

	backendTLS backendTLSCache // relay.go: per-backend TLS client configs of the policy in force
	fwd        forwarders      // forwarders.go: the spool's forwarders

	// bench switches speed-ups off, so that the benchmark reports can
	// print a before and after from one run.
	bench benchSwitches
}

// benchSwitches: each one, when set, takes the edge back to how it was
// before a speed-up (scripts/bench prints both).
type benchSwitches struct {
	oneWritePerRecord  atomic.Bool // TLS records to a backend written one by one (gather.go)
	plainReadsAsAsked  atomic.Bool // no read-ahead for PDU headers on plain connections (waithook.go)
	backendSessionsOff atomic.Bool // a full TLS handshake with a backend for every association (backend.go)
	eagerLoggers       atomic.Bool // each connection's logger built as its fields become known (connlog.go)
	groupNotLearned    atomic.Bool // every backend handshake offers the profile's groups in its order (backend.go)
	backendMaxOffered  atomic.Bool // a relayed client is offered the backend's maximum PDU length only (relay_negotiate.go)
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Config != nil {
			s.cfg.Store(s.Config)
		}
		s.log = s.Logger
		if s.log == nil {
			s.log = hclog.NewNullLogger()
		}
		s.log = s.log.Named("proxy")
		if s.Metrics == nil {
			s.Metrics = NewMetrics()
		}
		if s.Spool != nil {
			s.Metrics.SetSpool(s.Spool)
		}
		if s.Audit != nil {
			w := s.Audit
			s.Metrics.SetAuditSource(w.QueueDepth, w.Dropped)
			s.Metrics.SetAuditWriteErrors(w.WriteErrors)
			if f := w.Forwarder(); f != nil {
				s.Metrics.SetForwarder(f.Backlog, f.LastDelivered)
			}
		}
		s.Metrics.SetAssociationLimit(func() int {
			if cfg := s.current(); cfg != nil {
				return cfg.Edge.MaxAssociations
			}
			return 0
		})
		s.Metrics.SetCertificateSource(func() time.Time {
			if s.TLS == nil {
				return time.Time{}
			}
			return s.TLS.CertificateNotAfter()
		})
		s.listeners = map[net.Listener]struct{}{}
		s.byName = map[string]net.Listener{}
		s.owned = map[string]*ownedListener{}
		s.conns = map[*conn]struct{}{}
		s.tlsFail = newTLSFailLimiter(s.auditEvent)
		s.refused = newSourceLimiter(audit.EventConnectionRefused, s.auditEvent)
	})
}

// current returns the configuration in force.
func (s *Server) current() *policy.Config { return s.cfg.Load() }

// ListenAndServe listens on edge.listen and every listener block (and
// serves edge.admin_listen when set), then serves until Shutdown.
func (s *Server) ListenAndServe() error {
	s.init()
	cfg := s.current()
	if cfg == nil {
		return errors.New("proxy: no configuration")
	}
	if err := s.StartAdmin(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Edge.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Edge.Listen, err)
	}
	if err := s.StartListeners(); err != nil {
		ln.Close()
		return err
	}
	return s.Serve(ln)
}

// StartAdmin starts the admin listener (/metrics, /healthz, /readyz) on
// edge.admin_listen if it is set and not yet running.
func (s *Server) StartAdmin() error {
	s.init()
	cfg := s.current()
	if cfg == nil || cfg.Edge.AdminListen == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin != nil {
		return nil
	}
	h := AdminHandler(s.Metrics, s.Ready)
	if s.Console != nil {
		h = withConsole(h, s.Console)
	}
	a, err := startAdmin(cfg.Edge.AdminListen, h, s.AdminTLS)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", cfg.Edge.AdminListen, err)
	}
	s.admin = a
	s.log.Info("admin listener up", "addr", a.Addr().String())
	return nil
}

// AdminAddr is the admin listener's address, nil when there is none.
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// Ready reports whether a listener is up, certificates and policy are
// loaded, and the audit trail is being written: what /readyz answers. While
// the trail's disk fails, associations would stall on the audit queue or
// go unrecorded, so a load balancer should send them elsewhere.
func (s *Server) Ready() bool {
	if s.shutdown.Load() || s.listening.Load() == 0 || s.current() == nil || s.TLS == nil {
		return false
	}
	if s.Audit != nil && s.Audit.Failing() {
		return false
	}
	return !s.TLS.CertificateNotAfter().IsZero()
}

// Serve accepts connections on ln, as the edge block's TLS listener
// ("edge"), until Shutdown. See ServeListener.
func (s *Server) Serve(ln net.Listener) error { return s.ServeListener(policy.EdgeListener, ln) }

// ServeListener accepts connections on ln as the listener named name until
// Shutdown (or until a reload removes a listener the Server opened itself).
// Each connection is served by the configuration in force when it arrives:
// the listener's tls (mutual TLS, or plain DICOM from allow_cidr only) and
// proxy_protocol, and the rules that apply to it. When proxy_protocol lists
// load balancers, a PROXY v1/v2 header from one of them stands for the
// client's address; others may not send one.
func (s *Server) ServeListener(name string, ln net.Listener) error {
	s.init()
	if s.current() == nil || s.TLS == nil {
		return errors.New("proxy: Server needs Config and TLS")
	}
	if s.shutdown.Load() {
		return ErrServerClosed
	}
	// Always wrapped, and the policy reads the configuration in force at
	// each accept, so a reload that changes proxy_protocol applies to
	// new connections (with none configured a connection passes through
	// unwrapped). No header timeout of the library's: conn.open reads the
	// header itself under proxyHeaderTimeout (proxyheader.go), so that a
	// missing header is refused as such.
	ln = &proxyproto.Listener{
		Listener: ln,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			var lbs []netip.Prefix
			if l := s.current().Listener(name); l != nil {
				lbs = l.ProxyProtocol
			}
			return proxyPolicy(lbs, o)
		},
		ReadHeaderTimeout: -1,
	}
	s.mu.Lock()
	if s.shutdown.Load() {
		// Shutdown has closed the listeners it knew of; this one came late.
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.byName[name] = ln
	// Counted under mu: once ListenerAddr names this listener, Ready
	// counts it too.
	s.listening.Add(1)
	s.mu.Unlock()
	defer func() {
		s.listening.Add(-1)
		s.mu.Lock()
		delete(s.listeners, ln)
		if s.byName[name] == ln {
			delete(s.byName, name)
		}
		s.mu.Unlock()
		ln.Close()
	}()
	s.log.Info("listening", "listener", name, "addr", ln.Addr().String())

	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Anything else (EMFILE/ENFILE when descriptors run out, ENOBUFS,
			// ECONNABORTED, ...) is the host's or one client's trouble, not a
			// reason for the edge to exit: back off and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "error", err, "delay", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		// A slot for the TLS handshake and A-ASSOCIATE-RQ, taken before any
		// work is done: connections that have not yet associated cannot pile
		// up (descriptors, handshake state, goroutines) beyond the limit.
		// Where the source is known already (no PROXY header to wait for),
		// its share is taken here too, before the global slot: a flood from
		// a few sources is refused in this loop and never holds a global
		// slot, even for the moment a goroutine would need to refuse it.
		adm := s.current().Edge.Admission()
		var srcKey netip.Prefix
		srcHeld := false
		if !awaitsProxyHeader(raw) {
			up := upstreamAddr(raw)
			// A plain listener's outsider is refused here, before it takes
			// any slot (behind a PROXY header, conn.open checks instead).
			if l := s.current().Listener(name); l != nil && !l.AllowsSource(up.Addr()) {
				s.refuse(raw, refusal{Remote: up, Listener: name, Reason: RefusedSourceNotAllowed,
					Detail: fmt.Sprintf("not in listener %q's allow_cidr", name)})
				continue
			}
			if srcKey = sourceKey(up.Addr()); !s.acquirePreSource(srcKey, adm) {
				s.refuse(raw, refusal{Remote: up, Listener: name, Reason: RefusedTooManyConnections,
					Detail: fmt.Sprintf("%d connections before association from this source, its share", adm.PerSource)})
				continue
			}
			srcHeld = true
		}
		if !s.tryAcquirePre(adm) {
			if srcHeld {
				s.releasePreSource(srcKey)
			}
			s.refuse(raw, refusal{Remote: upstreamAddr(raw), Listener: name, Reason: RefusedTooManyConnections,
				Detail: fmt.Sprintf("%d connections before association, the limit", adm.PreAssociation)})
			continue
		}
		c := s.newConn(raw, name)
		c.srcKey, c.srcHeld = srcKey, srcHeld
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			c.releasePre()
			raw.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			c.serve(context.Background())
		}()
	}
}

// Shutdown stops accepting, lets open associations finish for up to
// edge.drain_timeout (or until ctx ends, whichever is first), then aborts
// the rest with A-ABORT and waits for their goroutines. It returns ctx's
// error if ctx ended before every goroutine was gone.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.shutdown.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.drain() // connections still before their association need not wait
	}
	admin := s.admin
	s.mu.Unlock()

	drain := policy.DefaultDrainTimeout
	if cfg := s.current(); cfg != nil {
		drain = cfg.Edge.Drain()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	timer := time.NewTimer(drain)
	defer timer.Stop()
	var err error
	select {
	case <-done:
	case <-timer.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	select {
	case <-done:
	default:
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		// Outside s.mu and all at once: each abort may wait (bounded) for a
		// peer that does not read, and those waits must not add up.
		var aborts sync.WaitGroup
		for _, c := range conns {
			aborts.Go(c.abort)
		}
		aborts.Wait()
		s.log.Warn("drain timeout: aborted open associations", "count", len(conns))
		// Aborting closes the sockets, so the goroutines end promptly.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			err = errors.New("proxy: connections did not end after abort")
		}
	}
	s.stopForwarders()
	s.tlsFail.flush() // what was held back is summarised before the trail closes
	s.refused.flush()
	if admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = admin.shutdown(actx)
		cancel()
	}
	return err
}

// Close aborts everything at once: Shutdown with no drain.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Reload puts cfg in force for new associations (established ones keep
// their decision), reloads the TLS layer's certificates, CAs and CRLs, and
// audits the outcome. On a TLS error the old configuration stays.
func (s *Server) Reload(cfg *policy.Config) error {
	s.init()
	if cfg == nil {
		return errors.New("proxy: Reload with nil config")
	}
	if s.TLS != nil {
		if err := s.TLS.Reload(s.TLSConfigFor(cfg)); err != nil {
			s.ReloadFailed(fmt.Sprintf("tls: %v", err))
			return fmt.Errorf("reload tls: %w", err)
		}
	}
	old := s.cfg.Swap(cfg)
	// What an administrator checks after a reload: which file, how many rules.
	detail := fmt.Sprintf("%s: %s, %s", cfg.Filename, count(len(cfg.Policy.Rules()), "rule"), count(len(cfg.Backends), "backend"))
	if old != nil && old.Edge.Listen != cfg.Edge.Listen {
		detail += "; edge.listen changed: takes effect on restart"
	}
	for _, n := range s.syncListeners(cfg) {
		s.log.Info("listeners reloaded", "change", n)
		detail += "; " + n
	}
	s.syncForwarders(cfg)
	s.log.Info("policy reloaded", "file", cfg.Filename, "rules", len(cfg.Policy.Rules()), "backends", len(cfg.Backends))
	s.auditEvent(audit.Event{Event: audit.EventPolicyReloaded, Detail: detail})
	return nil
}

// ReloadFailed records a refused reload (the old policy stays in force).
func (s *Server) ReloadFailed(detail string) {
	s.init()
	s.log.Warn("reload refused; the old policy stays in force", "detail", detail)
	s.auditEvent(audit.Event{Event: audit.EventPolicyReloadFailed, Detail: detail})
}

// ReloadFile loads path and reloads it; an invalid file is refused, audited
// and its diagnostics returned.
func (s *Server) ReloadFile(path string) (*policy.Config, error) {
	cfg, diags := policy.LoadFile(path)
	if diags.HasErrors() {
		// The same file:line:col: form as policy check (not HCL's
		// "file:70,12-17"), one problem after another on one line.
		var errs hcl.Diagnostics
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				errs = append(errs, d)
			}
		}
		var b strings.Builder
		policy.WriteDiagnostics(&b, errs, nil)
		s.ReloadFailed(strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", "; "))
		return cfg, diags
	}
	return cfg, s.Reload(cfg)
}

func (s *Server) auditEvent(e audit.Event) {
	if s.Audit != nil {
		s.Audit.Log(e)
	}
}

// TLSConfigFor is TLSConfig with the server's hooks: a changed edge
// certificate (rotated files, reload, ACME renewal) is logged and audited as
// cert.renewed. Use it to create the Layer given as Server.TLS.
func (s *Server) TLSConfigFor(cfg *policy.Config) tlslayer.Config {
	t := TLSConfig(cfg, s.Logger)
	t.OnCertRenewed = s.certRenewed
	return t
}

func (s *Server) certRenewed(detail string) {
	s.init()
	s.log.Info("edge certificate changed", "detail", detail)
	s.auditEvent(audit.Event{Event: audit.EventCertRenewed, Detail: detail})
}

// count spells "1 rule", "4 rules".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
