package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/spool"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// testPKI is one openssl CA per test binary run with the edge's server
// certificate and a few client certificates; making it costs ~1 s, so the
// tests share it.
type testPKI struct {
	ca                string
	edgeCert, edgeKey string
	clientCert        string // CN "client"
	clientKey         string
	otherCert         string // CN "intruder": verifies, but no rule lets it in
	otherKey          string
	rogueCert         string // from a CA the edge does not trust
	rogueKey          string
	rogueCA           string
	issuer            *testpeer.PKI // to issue more certificates
}

var (
	pkiOnce sync.Once
	pki     *testPKI
	pkiT    = &pkiHolder{}
)

// pkiHolder keeps the shared PKI's temp dir alive for the whole run (a
// t.TempDir would vanish with the first test).
type pkiHolder struct{ dir string }

func sharedPKI(t testing.TB) *testPKI {
	t.Helper()
	testpeer.Require(t, "openssl")
	pkiOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dicomedge-proxy-pki-")
		if err != nil {
			t.Fatal(err)
		}
		pkiT.dir = dir
		tb := &dirTB{TB: t, dir: dir}
		p := testpeer.NewPKI(tb, "edge-ca")
		r := testpeer.NewPKI(tb, "rogue-ca")
		pki = &testPKI{ca: p.CACert, rogueCA: r.CACert, issuer: p}
		pki.edgeCert, pki.edgeKey = p.Issue(tb, "edge", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
		pki.clientCert, pki.clientKey = p.Issue(tb, "client", testpeer.CertOptions{CN: "client", DNS: []string{"modality.clinic-a.example.org"}})
		pki.otherCert, pki.otherKey = p.Issue(tb, "intruder", testpeer.CertOptions{CN: "intruder"})
		pki.rogueCert, pki.rogueKey = r.Issue(tb, "client", testpeer.CertOptions{CN: "client"})
	})
	if pki == nil {
		t.Fatal("shared PKI could not be made")
	}
	return pki
}

// dirTB redirects TempDir to a directory that outlives the first test.
type dirTB struct {
	testing.TB
	dir string
	n   int
}

func (d *dirTB) TempDir() string {
	d.n++
	p := filepath.Join(d.dir, fmt.Sprint(d.n))
	if err := os.MkdirAll(p, 0o700); err != nil {
		d.TB.Fatal(err)
	}
	return p
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{pkiT.dir, benchDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// edgeOptions are the parts of policy.hcl a test varies.
type edgeOptions struct {
	MaxAssociations int
	MaxPerClient    int // max_associations_per_client; 0: the default
	MaxPDU          int
	ARTIM, Idle     string
	Drain           string
	Backends        string // backend blocks
	Rules           string // rule blocks before the default answer/deny rules
	Listeners       string // listener blocks (served with StartListeners)
	AdminListen     bool
	ProxyProtocol   []string
	PatientIDs      string
	NoAudit         bool
	CertFile        string // the edge's certificate instead of the shared one
	KeyFile         string
	TLSExtra        string   // more attributes of the tls block (crl, warn_expiry)
	ExtraClientCAs  []string // client_ca files besides the shared test CA
	Quiet           bool     // log at warn only (benchmarks)
	// BeforeSpeedUps runs the edge as it was before the speed-ups the
	// benchmark reports measure (benchSwitches, tlslayer's
	// VerifyEachHandshake), for their before rows.
	BeforeSpeedUps bool
	// Prepare, when set, runs on the edge's directory before the audit
	// trail is opened (e.g. to put the audit file on a failing device).
	Prepare func(dir string)
}

// testEdge is a running in-process edge with its audit trail.
type testEdge struct {
	Addr      string
	Server    *Server
	AuditFile string
	Dir       string
	Logs      *testpeer.SyncBuffer
	pki       *testPKI
	opts      edgeOptions // defaults filled in
	file      string      // the policy file
}

func startEdge(t testing.TB, o edgeOptions) *testEdge {
	t.Helper()
	p := sharedPKI(t)
	dir := t.TempDir()
	if o.MaxAssociations == 0 {
		o.MaxAssociations = 64
	}
	if o.MaxPDU == 0 {
		o.MaxPDU = 1 << 20
	}
	if o.ARTIM == "" {
		o.ARTIM = "5s"
	}
	if o.Idle == "" {
		o.Idle = "30s"
	}
	if o.Drain == "" {
		o.Drain = "5s"
	}
	if o.PatientIDs == "" {
		o.PatientIDs = "plain"
	}
	if o.CertFile == "" {
		o.CertFile, o.KeyFile = p.edgeCert, p.edgeKey
	}
	admin := ""
	if o.AdminListen {
		admin = fmt.Sprintf("admin_listen = %q", testpeer.FreeAddr(t))
	}
	pp := ""
	if len(o.ProxyProtocol) > 0 {
		pp = fmt.Sprintf("proxy_protocol = [%q]", strings.Join(o.ProxyProtocol, `", "`))
	}
	if o.MaxPerClient > 0 {
		pp += fmt.Sprintf("\n  max_associations_per_client = %d", o.MaxPerClient)
	}
	if !strings.Contains(o.TLSExtra, "warn_expiry") {
		// The test certificates live 25 hours: every client would be
		// "expiring" and write tls.expiring into the sequences tests expect.
		o.TLSExtra += "\n  warn_expiry = \"0\""
	}
	src := o.source(p, admin, pp)
	if o.Prepare != nil {
		o.Prepare(dir)
	}
	file := filepath.Join(dir, "policy.hcl")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := policy.LoadFile(file)
	if diags.HasErrors() {
		var b strings.Builder
		policy.WriteDiagnostics(&b, diags, cfg.Files)
		t.Fatalf("test policy invalid:\n%s\n%s", b.String(), src)
	}
	logs := &testpeer.SyncBuffer{}
	level := hclog.Debug
	if o.Quiet {
		level = hclog.Warn
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "dicomedge", Level: level, Output: logs})
	aw, err := audit.Open(AuditConfig(cfg, logger))
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	s := &Server{Config: cfg, Audit: aw, Logger: logger}
	if o.NoAudit {
		s.Audit = nil
	}
	if len(cfg.Policy.StoreAndForwardBackends()) > 0 {
		// A store-and-forward rule: the spool, as serve opens it.
		sc := spool.Config{Dir: cfg.Spool.Dir, MaxSize: cfg.Spool.MaxSize, MaxAge: cfg.Spool.MaxAge}
		if s.Audit != nil {
			sc.Audit = func(e audit.Event) { aw.LogWritten(context.Background(), e) }
		}
		sp, err := spool.Open(sc)
		if err != nil {
			t.Fatalf("spool: %v", err)
		}
		t.Cleanup(sp.Close)
		s.Spool = sp
	}
	tc := s.TLSConfigFor(cfg)
	tc.PollInterval = 200 * time.Millisecond
	if o.BeforeSpeedUps {
		tc.VerifyEachHandshake = true
		s.bench.oneWritePerRecord.Store(true)
		s.bench.plainReadsAsAsked.Store(true)
		s.bench.eagerLoggers.Store(true)
		s.bench.groupNotLearned.Store(true)
		s.bench.backendSessionsOff.Store(true)
		s.bench.backendMaxOffered.Store(true)
	}
	layer, err := tlslayer.New(context.Background(), tc)
	if err != nil {
		t.Fatalf("tls layer: %v", err)
	}
	t.Cleanup(func() { layer.Close() })
	s.TLS = layer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	if err := s.StartListeners(); err != nil {
		t.Fatal(err)
	}
	s.StartForwarders()
	// Serve registers the listener in its goroutine; until then the edge
	// is not ready (/readyz 503), which a test asking at once would see.
	for deadline := time.Now().Add(20 * time.Second); s.ListenerAddr(policy.EdgeListener) == nil; time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Serve returned %v before serving", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("edge listener not served after 20s")
		}
	}
	e := &testEdge{Addr: ln.Addr().String(), Server: s, AuditFile: cfg.Audit.File, Dir: dir, Logs: logs, pki: p, opts: o, file: file}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case err := <-done:
			if err != ErrServerClosed {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
		aw.Close()
		if t.Failed() {
			t.Logf("edge log:\n%s", logs.String())
		}
	})
	return e
}

// listenerAddr waits (bounded) until the listener named name is served
// and returns its address.
func (e *testEdge) listenerAddr(t testing.TB, name string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if a := e.Server.ListenerAddr(name); a != nil {
			return a.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener %q not served after 20s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shortARTIM is for tests that want the edge to give up soon (after an
// A-ABORT it waits ARTIM for the peer to close, PS3.8 Sta13). ARTIM also
// bounds the TLS handshake (docs/limits.md), and a race-enabled handshake
// on a loaded 2-core machine overran 1s; 3s leaves room and stays well
// far below the default (30s) that a test of expiry tells it from.
const shortARTIM = "3s"

func (e *testEdge) host() string { return testpeer.Host(e.Addr) }
func (e *testEdge) port() string { return fmt.Sprint(testpeer.Port(e.Addr)) }

// tlsArgs are DCMTK's options for a TLS client with the given identity.
func (e *testEdge) tlsArgs(cert, key string) []string {
	return []string{"+tls", key, cert, "+cf", e.pki.ca}
}

// dcmtk runs a DCMTK client against the edge with the "client" identity.
func (e *testEdge) dcmtk(t testing.TB, tool string, args ...string) (string, error) {
	t.Helper()
	return e.dcmtkAs(t, e.pki.clientCert, e.pki.clientKey, tool, args...)
}

func (e *testEdge) dcmtkAs(t testing.TB, cert, key, tool string, args ...string) (string, error) {
	t.Helper()
	testpeer.Require(t, tool)
	ctx := testpeer.Context(t, 2*time.Minute)
	full := append(e.tlsArgs(cert, key), args...)
	return testpeer.Run(ctx, tool, full...)
}

// events reads the audit trail so far.
func (e *testEdge) events(t testing.TB) []audit.Event {
	t.Helper()
	var out []audit.Event
	err := audit.ReadFiles(audit.Files(e.AuditFile), audit.Filter{}, func(ev audit.Event, _ []byte) error {
		out = append(out, ev)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read audit: %v", err)
	}
	return out
}

// waitEvent waits (bounded) until the audit trail holds an event matching
// pred, and returns it.
func (e *testEdge) waitEvent(t testing.TB, what string, pred func(audit.Event) bool) audit.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := e.events(t)
		for _, ev := range evs {
			if pred(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, ev := range evs {
				fmt.Fprintf(&b, "  %s %s rule=%s reason=%s service=%s status=%s\n", ev.Event, ev.CalledAE, ev.Rule, ev.Reason, ev.Service, ev.Status)
			}
			t.Fatalf("no audit event %s after 10s; have:\n%s", what, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// goClient opens a TLS connection to the edge as the given identity, for
// tests that must send exact bytes.
func (e *testEdge) goClient(t testing.TB, cert, key string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.Addr, e.clientTLS(t, cert, key))
	if err != nil {
		t.Fatalf("dial edge: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clientTLS is the TLS configuration of a client with the given identity
// that trusts the edge's test CA.
func (e *testEdge) clientTLS(t testing.TB, cert, key string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(e.pki.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost"}
}

// scOnlyRule relays MAINPACS for the test client to backend "pacs", allowing
// only C-ECHO and C-STORE of Verification and Secondary Capture.
const scOnlyRule = `
rule "sc-only" {
  when {
    client_cn = ["client"]
    called_ae = ["MAINPACS"]
  }
  relay {
    backend     = "pacs"
    services    = ["C-ECHO", "C-STORE"]
    sop_classes = ["1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.7"]
  }
}
`

// echoRQ is a minimal A-ASSOCIATE-RQ proposing Verification.
func echoRQ(calling, called string) *association.AssociateRQ {
	return &association.AssociateRQ{
		ProtocolVersion: 1, CallingAE: calling, CalledAE: called,
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextRQ{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}},
		UserInfo: association.UserInfo{MaxLength: 16384, HasMaxLength: true, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "GOTEST"},
	}
}

// readPDU reads one PDU from the edge with a deadline.
func readPDU(t testing.TB, c net.Conn, d time.Duration) (association.PDU, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	return association.NewReader(c, 4<<20).ReadPDU()
}

// associate sends rq on c and returns the edge's A-ASSOCIATE-AC, failing
// the test on an error or any other answer; why, if given, says why an AC
// was expected.
func associate(t testing.TB, c net.Conn, rq *association.AssociateRQ, why ...string) *association.AssociateAC {
	t.Helper()
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ac, ok := p.(*association.AssociateAC)
	if !ok {
		t.Fatalf("got %T, want A-ASSOCIATE-AC %v", p, why)
	}
	return ac
}

// storeBackend is a backend block for a storescp.
func backendBlock(name, addr, aet string) string {
	return fmt.Sprintf("backend %q {\n  address = %q\n  ae_title = %q\n}\n", name, addr, aet)
}

// source renders the test policy.hcl.
func (o edgeOptions) source(p *testPKI, admin, pp string) string {
	return fmt.Sprintf(`
edge {
  ae_title         = "DICOMEDGE"
  listen           = "127.0.0.1:0"
  %s
  max_pdu_length   = %d
  max_associations = %d
  artim_timeout    = %q
  idle_timeout     = %q
  drain_timeout    = %q
  %s
}
tls {
  client_ca = [%s]
  cert_file = %q
  key_file  = %q
  %s
}
audit {
  file        = "audit/audit.jsonl"
  patient_ids = %q
  fsync       = "100ms"
}
%s
%s
%s
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
`, admin, o.MaxPDU, o.MaxAssociations, o.ARTIM, o.Idle, o.Drain, pp, quoteList(append([]string{p.ca}, o.ExtraClientCAs...)), o.CertFile, o.KeyFile, o.TLSExtra, o.PatientIDs, o.Listeners, o.Backends, o.Rules)
}

// quoteList renders strings as the elements of an HCL list.
func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
