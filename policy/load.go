package policy

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Defaults, as docs/policy.md lists them.
const (
	DefaultAETitle         = "DICOMEDGE"
	DefaultListen          = ":2762"
	DefaultMaxPDULength    = 1 << 20
	DefaultMaxAssociations = 512
	DefaultARTIMTimeout    = 30 * time.Second
	DefaultIdleTimeout     = 10 * time.Minute
	DefaultDrainTimeout    = 30 * time.Second
	DefaultTLSProfile      = "bcp195-rfc8996"
	DefaultACMEDirectory   = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultAuditFile       = "var/audit/audit.jsonl"
	// DefaultACMEStorage is beside the audit log's default, in the run
	// directory next to the policy file: serve needs a place for the ACME
	// account and certificates, so check and serve agree on one.
	DefaultACMEStorage = "var/acme"
	DefaultFsync       = time.Second

	// The smallest and largest max_pdu_length accepted. PS3.8 lets a peer
	// announce any length; the edge holds up to one PDU per direction in
	// memory, so the limit is bounded to keep 512 associations affordable.
	MinMaxPDULength = 4096
	MaxMaxPDULength = 64 << 20
)

// TLSProfiles are the DICOM PS3.15 Annex B secure transport connection
// profiles the tls.profile attribute accepts.
var TLSProfiles = []string{"bcp195-rfc8996", "bcp195-rfc8996-modified", "bcp195-nd", "bcp195", "bcp195-extended"}

// LoadFile reads, decodes, validates and compiles the configuration at path.
// Relative file names inside are resolved against path's directory. When the
// diagnostics contain errors the Config holds only Filename and Files (for
// WriteDiagnostics) and must not be used otherwise.
func LoadFile(path string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return &Config{Filename: path, Files: map[string]*hcl.File{}}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read configuration file",
			Detail:   fmt.Sprintf("The file %q could not be read: %s.", path, err),
		}}
	}
	return Load(path, src)
}

// Load decodes, validates and compiles src; filename names it in diagnostics
// and relative file names inside are resolved against its directory. Every
// problem found is returned at once, sorted by position. See LoadFile for
// the Config returned with errors.
func Load(filename string, src []byte) (*Config, hcl.Diagnostics) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	files := map[string]*hcl.File{filename: file}
	if file == nil || file.Body == nil {
		return &Config{Filename: filename, Files: files}, diags
	}
	var fs fileSchema
	diags = append(diags, gohcl.DecodeBody(file.Body, nil, &fs)...)

	l := &loader{base: filepath.Dir(filename), bodyEnd: file.Body.MissingItemRange()}
	cfg := l.build(&fs)
	diags = append(diags, l.diags...)
	sortDiagnostics(diags)
	if diags.HasErrors() {
		return &Config{Filename: filename, Files: files}, diags
	}
	cfg.Filename = filename
	cfg.Files = files
	return cfg, diags
}

// sortDiagnostics puts diagnostics in file order so that output is stable
// (gohcl visits blocks in map order) and reads top to bottom.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
}

// loader turns the decoded schema into a Config, collecting every problem.
type loader struct {
	diags       hcl.Diagnostics
	listenerRng map[string]hcl.Range // listener blocks' name labels
	base        string
	bodyEnd     hcl.Range
}

// val is a decoded string with the range of the expression it came from.
type val struct {
	s   string
	rng hcl.Range
}

func (l *loader) add(sev hcl.DiagnosticSeverity, rng hcl.Range, summary, detail string) {
	r := rng
	l.diags = append(l.diags, &hcl.Diagnostic{Severity: sev, Summary: summary, Detail: detail, Subject: &r})
}

func (l *loader) errorf(rng hcl.Range, summary, format string, args ...any) {
	l.add(hcl.DiagError, rng, summary, fmt.Sprintf(format, args...))
}

func (l *loader) warnf(rng hcl.Range, summary, format string, args ...any) {
	l.add(hcl.DiagWarning, rng, summary, fmt.Sprintf(format, args...))
}

func (l *loader) decode(a *hcl.Attribute, target any) bool {
	return l.decodeExpr(a.Expr, target)
}

// decodeExpr evaluates first, so that an expression hcl refuses (variables,
// function calls) is reported once rather than again as an unknown value.
func (l *loader) decodeExpr(e hcl.Expression, target any) bool {
	if _, ds := e.Value(nil); ds.HasErrors() {
		l.diags = append(l.diags, ds...)
		return false
	}
	ds := gohcl.DecodeExpression(e, nil, target)
	l.diags = append(l.diags, ds...)
	return !ds.HasErrors()
}

// str returns the attribute's string value, or def (with ok false) when it
// is absent or not a string.
func (l *loader) str(a *hcl.Attribute, def string) (val, bool) {
	if a == nil {
		return val{s: def}, false
	}
	var s string
	if !l.decode(a, &s) {
		return val{s: def, rng: a.Expr.Range()}, false
	}
	return val{s: s, rng: a.Expr.Range()}, true
}

// strList returns the elements of a list-of-strings attribute, each with
// its own range so that a diagnostic can point at the one that is wrong.
func (l *loader) strList(a *hcl.Attribute) []val {
	if a == nil {
		return nil
	}
	exprs, ds := hcl.ExprList(a.Expr)
	if ds.HasErrors() {
		// Not a list literal: let hcl say what type it got.
		var xs []string
		if !l.decode(a, &xs) {
			return nil
		}
		out := make([]val, len(xs))
		for i, x := range xs {
			out[i] = val{s: x, rng: a.Expr.Range()}
		}
		return out
	}
	out := make([]val, 0, len(exprs))
	for _, e := range exprs {
		var s string
		if l.decodeExpr(e, &s) {
			out = append(out, val{s: s, rng: e.Range()})
		}
	}
	return out
}

func (l *loader) path(v val) string {
	if v.s == "" || filepath.IsAbs(v.s) {
		return v.s
	}
	return filepath.Join(l.base, v.s)
}

// paths decodes a list of file names; none may be empty.
func (l *loader) paths(a *hcl.Attribute, what string) []string {
	var out []string
	for _, v := range l.strList(a) {
		if strings.TrimSpace(v.s) == "" {
			l.errorf(v.rng, "Empty file name", "Each element of %s must name a file.", what)
			continue
		}
		out = append(out, l.path(v))
	}
	return out
}

// filePath decodes a single optional file name attribute.
func (l *loader) filePath(a *hcl.Attribute, what, def string) string {
	v, ok := l.str(a, def)
	if ok && strings.TrimSpace(v.s) == "" {
		l.errorf(v.rng, "Empty file name", "%s must name a file; leave the attribute out instead.", what)
		return ""
	}
	return l.path(v)
}

func (l *loader) duration(a *hcl.Attribute, what string, def time.Duration, allowZero bool) time.Duration {
	v, ok := l.str(a, "")
	if !ok {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v.s))
	if err != nil {
		l.errorf(v.rng, "Invalid duration", "%s = %q is not a duration: write a number and a unit, like \"30s\", \"10m\" or \"1h30m\".", what, v.s)
		return def
	}
	if d < 0 || (d == 0 && !allowZero) {
		l.errorf(v.rng, "Invalid duration", "%s must be greater than zero, not %q.", what, v.s)
		return def
	}
	return d
}

func (l *loader) integer(a *hcl.Attribute, what string, def, lo, hi int64) int64 {
	if a == nil {
		return def
	}
	var n int64
	if !l.decode(a, &n) {
		return def
	}
	if n < lo || n > hi {
		l.errorf(a.Expr.Range(), "Value out of range", "%s must be between %d and %d, not %d.", what, lo, hi, n)
		return def
	}
	return n
}

func (l *loader) boolean(a *hcl.Attribute) bool {
	if a == nil {
		return false
	}
	var b bool
	l.decode(a, &b)
	return b
}

// enum checks v against allowed, suggesting the closest name.
func (l *loader) enum(v val, what string, allowed []string) bool {
	for _, s := range allowed {
		if v.s == s {
			return true
		}
	}
	l.errorf(v.rng, "Unknown "+what, "%q is not a known %s; use one of %s.%s", v.s, what, quoteList(allowed, "[]"), didYouMean(v.s, allowed))
	return false
}

// didYouMean suggests the closest of names to s, when one is close.
func didYouMean(s string, names []string) string {
	best, bestD := "", 4
	for _, n := range names {
		if d := editDistance(strings.ToLower(s), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// hostPort checks "host:port"; allowZero lets a listener ask for any port.
func (l *loader) hostPort(v val, what string, allowZero bool) bool {
	host, port, err := net.SplitHostPort(v.s)
	if err != nil {
		l.errorf(v.rng, "Invalid address", "%s = %q is not host:port (%s); for example \"10.0.0.5:104\" or \":2762\".", what, v.s, errText(err))
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !allowZero) {
		l.errorf(v.rng, "Invalid address", "%s = %q: the port must be a number from 1 to 65535.", what, v.s)
		return false
	}
	if strings.ContainsAny(host, " \t\r\n/") {
		l.errorf(v.rng, "Invalid address", "%s = %q: %q is not a host name or IP address.", what, v.s, host)
		return false
	}
	return true
}

// at formats a position as file:line:col, the form diagnostics use.
func at(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func errText(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}

// aeTitle checks a DICOM AE title (PS3.5 VR AE): at most 16 characters of
// the default character repertoire (ASCII) without backslash or control
// characters, not only spaces. Leading and trailing spaces are not
// significant and are dropped. In a pattern '*' and '?' are wildcards.
func (l *loader) aeTitle(v val, what string) (string, bool) {
	s := trimAE(v.s)
	if s == "" {
		l.errorf(v.rng, "Invalid AE title", "%s: an AE title cannot be empty or only spaces.", what)
		return "", false
	}
	if len(s) > 16 {
		l.errorf(v.rng, "Invalid AE title", "%s: %q is %d characters long; an AE title has at most 16.", what, s, len(s))
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			l.errorf(v.rng, "Invalid AE title", "%s: %q contains a backslash, which an AE title may not.", what, s)
			return "", false
		case c < 0x20 || c == 0x7f:
			l.errorf(v.rng, "Invalid AE title", "%s: %q contains a control character, which an AE title may not.", what, s)
			return "", false
		case c >= 0x80:
			l.errorf(v.rng, "Invalid AE title", "%s: %q contains a non-ASCII character; AE titles use the DICOM default character repertoire.", what, s)
			return "", false
		}
	}
	return s, true
}

// name checks a certificate name pattern (CN, DNS, URI, email).
func (l *loader) namePattern(v val, what string, spaces bool) (string, bool) {
	if v.s == "" {
		l.errorf(v.rng, "Empty pattern", "%s: an empty pattern matches nothing; remove it, or use \"*\" for any.", what)
		return "", false
	}
	for _, r := range v.s {
		if r < 0x20 || r == 0x7f || (!spaces && r == ' ') {
			l.errorf(v.rng, "Invalid pattern", "%s: %q contains a space or control character.", what, v.s)
			return "", false
		}
	}
	return v.s, true
}

func (l *loader) build(fs *fileSchema) *Config {
	cfg := &Config{Backends: map[string]*Backend{}}
	edge := first(l, fs.Edge, "edge")
	l.edge(edge, &cfg.Edge)
	l.tls(first(l, fs.TLS, "tls"), &cfg.TLS)
	l.audit(first(l, fs.Audit, "audit"), &cfg.Audit)
	cfg.Listeners = l.listeners(fs.Listener, &cfg.Edge, edge)
	order := l.backends(fs.Backends, cfg.Backends)
	cfg.Policy = l.rules(fs.Rules, cfg.Backends, order, cfg.Listeners)
	return cfg
}

// validListenerName: a name to write in when.listener, the audit trail and
// on the command line: letters, digits, '-', '_' and '.', at most 64.
func validListenerName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// listeners builds the edge block's TLS listener "edge" followed by each
// listener block, in file order.
func (l *loader) listeners(list []*listenerSchema, edge *Edge, edgeSchema *edgeSchema) []*Listener {
	out := []*Listener{{Name: EdgeListener, Listen: edge.Listen, TLS: true, ProxyProtocol: edge.ProxyProtocol}}
	edgeRange := l.bodyEnd
	if edgeSchema != nil {
		edgeRange = edgeSchema.DefRange
		if edgeSchema.Listen != nil {
			edgeRange = edgeSchema.Listen.Expr.Range()
		}
	}
	names := map[string]hcl.Range{}
	addrs := map[string]hcl.Range{listenKey(edge.Listen): edgeRange}
	for _, s := range list {
		switch {
		case s.Name == EdgeListener:
			l.errorf(s.NameRange, "Reserved listener name", "The edge block's own TLS listener is named %q; give this listener another name, like listener \"inside\".", EdgeListener)
			continue
		case !validListenerName(s.Name):
			l.errorf(s.NameRange, "Invalid listener name", "listener %q: a name has 1 to 64 letters, digits, '-', '_' or '.'.", s.Name)
			continue
		}
		prev, dup := names[s.Name]
		if l.listenerRng == nil {
			l.listenerRng = map[string]hcl.Range{}
		}
		if !dup {
			l.listenerRng[s.Name] = s.NameRange
		}
		if dup {
			l.errorf(s.NameRange, "Duplicate listener name", "A listener named %q is already defined at %s.", s.Name, at(prev))
		} else {
			names[s.Name] = s.NameRange
		}
		what := fmt.Sprintf("listener %q", s.Name)
		ln := &Listener{Name: s.Name, TLS: true}
		if v, ok := l.str(s.Listen, ""); ok {
			if l.hostPort(v, what+" listen", true) {
				ln.Listen = v.s
				key := listenKey(v.s)
				if prev, taken := addrs[key]; taken && key != "" {
					l.errorf(v.rng, "Duplicate listen address", "%s listens on %q, which %s already uses.", what, v.s, at(prev))
				} else {
					addrs[key] = v.rng
				}
			}
		} else if s.Listen == nil {
			l.errorf(s.DefRange, "Missing listen", "%s needs listen = \"host:port\", the address it accepts DICOM on.", what)
		}
		if s.TLS != nil {
			var b bool
			if l.decode(s.TLS, &b) {
				ln.TLS = b
			}
		}
		before := len(l.diags)
		cidrs := l.strList(s.AllowCIDR)
		for _, v := range cidrs {
			if p, ok := l.cidr(v, what+" allow_cidr"); ok {
				ln.AllowCIDR = append(ln.AllowCIDR, p)
			}
		}
		// An allow_cidr that did not decode, or whose elements were all
		// wrong, was reported already.
		if !ln.TLS && len(cidrs) == 0 && len(l.diags) == before {
			rng := s.DefRange
			if s.AllowCIDR != nil {
				rng = s.AllowCIDR.Expr.Range()
			}
			l.errorf(rng, "Missing allow_cidr", "%s has tls = false, so it must list in allow_cidr the networks allowed to connect (e.g. the PACS's address): a plain listener open to any address would let anyone send out through the edge.", what)
		}
		for _, v := range l.strList(s.ProxyProtocol) {
			if p, ok := l.cidr(v, what+" proxy_protocol"); ok {
				ln.ProxyProtocol = append(ln.ProxyProtocol, p)
			}
		}
		if !dup {
			out = append(out, ln)
		}
	}
	return out
}

// listenKey is what two listen addresses must not share; "" for port 0
// (any free port, as tests ask for), which never conflicts.
func listenKey(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return ""
	}
	if host == "0.0.0.0" || host == "::" {
		host = ""
	}
	return net.JoinHostPort(host, port)
}

// first returns the first of blocks that may appear only once, reporting
// any others.
func first[T ranged](l *loader, blocks []T, typ string) T {
	var zero T
	if len(blocks) == 0 {
		return zero
	}
	for _, b := range blocks[1:] {
		l.errorf(b.defRange(), "Duplicate "+typ+" block", "Only one %s block is allowed here; the first is at %s.", typ, at(blocks[0].defRange()))
	}
	return blocks[0]
}

func (l *loader) edge(s *edgeSchema, e *Edge) {
	if s == nil {
		s = &edgeSchema{}
	}
	e.AETitle = DefaultAETitle
	if v, ok := l.str(s.AETitle, DefaultAETitle); ok {
		if ae, ok := l.aeTitle(v, "edge.ae_title"); ok {
			e.AETitle = ae
		}
	}
	// Port 0 is allowed for the listeners: tests ask the kernel for a free port.
	v, ok := l.str(s.Listen, DefaultListen)
	if ok {
		l.hostPort(v, "edge.listen", true)
	}
	e.Listen = v.s
	if v, ok := l.str(s.AdminListen, ""); ok && v.s != "" {
		l.hostPort(v, "edge.admin_listen", true)
		e.AdminListen = v.s
	}
	e.MaxPDULength = uint32(l.integer(s.MaxPDULength, "edge.max_pdu_length", DefaultMaxPDULength, MinMaxPDULength, MaxMaxPDULength))
	e.MaxAssociations = int(l.integer(s.MaxAssociations, "edge.max_associations", DefaultMaxAssociations, 1, 1_000_000))
	e.MaxAssociationsPerClient = int(l.integer(s.MaxAssocPerClient, "edge.max_associations_per_client",
		int64(DefaultMaxAssociationsPerClient(e.MaxAssociations)), 1, 1_000_000))
	e.ARTIMTimeout = l.duration(s.ARTIMTimeout, "edge.artim_timeout", DefaultARTIMTimeout, false)
	e.IdleTimeout = l.duration(s.IdleTimeout, "edge.idle_timeout", DefaultIdleTimeout, false)
	e.DrainTimeout = l.duration(s.DrainTimeout, "edge.drain_timeout", DefaultDrainTimeout, true)
	for _, v := range l.strList(s.ProxyProtocol) {
		if p, ok := l.cidr(v, "edge.proxy_protocol"); ok {
			e.ProxyProtocol = append(e.ProxyProtocol, p)
		}
	}
}

// cidr parses a network; a bare address stands for itself alone.
func (l *loader) cidr(v val, what string) (netip.Prefix, bool) {
	s := strings.TrimSpace(v.s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			l.errorf(v.rng, "Invalid CIDR", "%s: %q is not a network like \"203.0.113.0/24\" or \"2001:db8::/32\", nor an IP address.", what, v.s)
			return netip.Prefix{}, false
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	if p.Addr().Is4In6() {
		// Clients are matched on their unmapped address; keep the prefix comparable.
		if p.Bits() < 96 {
			l.errorf(v.rng, "Invalid CIDR", "%s: %q mixes IPv4-mapped IPv6 with a prefix shorter than /96; write the IPv4 network instead.", what, v.s)
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		l.warnf(v.rng, "CIDR has host bits set", "%s: %q has bits set after the prefix length; it is read as %q.", what, v.s, m.String())
		p = m
	}
	return p, true
}

func (l *loader) tls(s *tlsSchema, t *TLS) {
	if s == nil {
		l.errorf(l.bodyEnd, "Missing tls block", "A tls block is required: it names the edge's certificate and, in client_ca, the CAs whose clients may connect.")
		return
	}
	if v, ok := l.str(s.Profile, DefaultTLSProfile); ok {
		l.enum(v, "TLS profile", TLSProfiles)
		t.Profile = v.s
	} else {
		t.Profile = v.s
	}
	t.ClientCA = l.paths(s.ClientCA, "tls.client_ca")
	if len(t.ClientCA) == 0 {
		rng := s.DefRange
		if s.ClientCA != nil {
			rng = s.ClientCA.Expr.Range()
		}
		l.errorf(rng, "Missing client_ca", "tls.client_ca must list at least one CA certificate file: every client must present a certificate that chains to one of them.")
	}
	t.CRL = l.paths(s.CRL, "tls.crl")
	t.CertFile = l.filePath(s.CertFile, "tls.cert_file", "")
	t.KeyFile = l.filePath(s.KeyFile, "tls.key_file", "")
	switch {
	case s.CertFile != nil && s.KeyFile == nil:
		l.errorf(s.CertFile.Range, "Missing key_file", "tls.cert_file needs tls.key_file, the file with its private key.")
	case s.KeyFile != nil && s.CertFile == nil:
		l.errorf(s.KeyFile.Range, "Missing cert_file", "tls.key_file needs tls.cert_file, the certificate it belongs to.")
	}
	acme := first(l, s.ACME, "acme")
	switch {
	case acme != nil && (s.CertFile != nil || s.KeyFile != nil):
		l.errorf(acme.DefRange, "Both cert_file and acme", "The edge's certificate comes either from files (cert_file and key_file) or from an ACME CA (acme block), not both.")
	case acme == nil && s.CertFile == nil && s.KeyFile == nil:
		l.errorf(s.DefRange, "No certificate for the edge", "Give tls.cert_file and tls.key_file, or an acme block to obtain a certificate from an ACME CA.")
	}
	if acme != nil {
		t.ACME = l.acme(acme)
	}
}

func (l *loader) acme(s *acmeSchema) *ACME {
	a := &ACME{}
	before := len(l.diags)
	domains := l.strList(s.Domains)
	for _, v := range domains {
		if validDomain(v.s) {
			a.Domains = append(a.Domains, strings.ToLower(v.s))
		} else {
			l.errorf(v.rng, "Invalid domain", "tls.acme.domains: %q is not a DNS name.", v.s)
		}
	}
	// An empty list is missing domains; a list that did not decode was reported already.
	if s.Domains == nil || (len(domains) == 0 && len(l.diags) == before) {
		l.errorf(s.DefRange, "Missing domains", "tls.acme.domains must list the DNS names the edge's certificate is for.")
	}
	if v, ok := l.str(s.Email, ""); ok {
		if v.s != "" && (!strings.Contains(v.s, "@") || strings.ContainsAny(v.s, " \t\r\n")) {
			l.errorf(v.rng, "Invalid email", "tls.acme.email: %q is not an email address.", v.s)
		}
		a.Email = v.s
	}
	v, ok := l.str(s.Directory, DefaultACMEDirectory)
	if ok {
		u, err := url.Parse(v.s)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			l.errorf(v.rng, "Invalid ACME directory", "tls.acme.directory: %q is not an https:// URL (RFC 8555 requires HTTPS).", v.s)
		}
	}
	a.Directory = v.s
	a.CARoots = l.paths(s.CARoots, "tls.acme.ca_roots")
	a.Storage = l.filePath(s.Storage, "tls.acme.storage", DefaultACMEStorage)
	a.HTTPPort = int(l.integer(s.HTTPPort, "tls.acme.http_port", 0, 0, 65535))
	return a
}

// validDomain accepts DNS names, with an optional leading wildcard label.
func validDomain(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

var (
	patientIDModes = []string{"omit", "hash", "plain"}
	onFullModes    = []string{"block", "drop"}
	syslogFormats  = []string{"atna", "json"}
)

func (l *loader) audit(s *auditSchema, a *Audit) {
	if s == nil {
		s = &auditSchema{}
	}
	a.File = l.filePath(s.File, "audit.file", DefaultAuditFile)
	v, ok := l.str(s.PatientIDs, "hash")
	if ok && !l.enum(v, "patient_ids mode", patientIDModes) {
		v.s = "hash"
	}
	a.PatientIDs = v.s
	a.Fsync = l.duration(s.Fsync, "audit.fsync", DefaultFsync, true)
	v, ok = l.str(s.OnFull, "block")
	if ok && !l.enum(v, "on_full mode", onFullModes) {
		v.s = "block"
	}
	a.OnFull = v.s
	if syslog := first(l, s.Syslog, "syslog"); syslog != nil {
		sl := &Syslog{}
		if v, ok := l.str(syslog.Address, ""); ok {
			l.hostPort(v, "audit.syslog.address", false)
			sl.Address = v.s
		} else if syslog.Address == nil {
			l.errorf(syslog.DefRange, "Missing address", "audit.syslog needs address = \"host:port\" of the collector (RFC 5425, usually port 6514).")
		}
		v, ok := l.str(syslog.Format, "atna")
		if ok {
			l.enum(v, "syslog format", syslogFormats)
		}
		sl.Format = v.s
		sl.CA = l.paths(syslog.CA, "audit.syslog.ca")
		sl.CertFile = l.filePath(syslog.CertFile, "audit.syslog.cert_file", "")
		sl.KeyFile = l.filePath(syslog.KeyFile, "audit.syslog.key_file", "")
		switch {
		case syslog.CertFile != nil && syslog.KeyFile == nil:
			l.errorf(syslog.CertFile.Range, "Missing key_file", "audit.syslog.cert_file needs audit.syslog.key_file, the file with its private key.")
		case syslog.KeyFile != nil && syslog.CertFile == nil:
			l.errorf(syslog.KeyFile.Range, "Missing cert_file", "audit.syslog.key_file needs audit.syslog.cert_file, the certificate it belongs to.")
		}
		a.Syslog = sl
	}
}

// backends builds the backends and returns their names in file order.
func (l *loader) backends(list []*backendSchema, out map[string]*Backend) []string {
	seen := map[string]hcl.Range{}
	var order []string
	for _, s := range list {
		if s.Name == "" {
			l.errorf(s.NameRange, "Empty backend name", "A backend needs a name, like backend \"pacs\".")
			continue
		}
		// A duplicate is still checked, so its own mistakes are reported too.
		prev, dup := seen[s.Name]
		if dup {
			l.errorf(s.NameRange, "Duplicate backend name", "A backend named %q is already defined at %s.", s.Name, at(prev))
		} else {
			seen[s.Name] = s.NameRange
		}
		b := &Backend{Name: s.Name}
		if v, ok := l.str(s.Address, ""); ok {
			l.hostPort(v, fmt.Sprintf("backend %q address", s.Name), false)
			b.Address = v.s
		} else if s.Address == nil {
			l.errorf(s.DefRange, "Missing address", "backend %q needs address = \"host:port\" of the PACS.", s.Name)
		}
		if v, ok := l.str(s.AETitle, ""); ok {
			b.AETitle, _ = l.aeTitle(v, fmt.Sprintf("backend %q ae_title", s.Name))
		} else if s.AETitle == nil {
			l.errorf(s.DefRange, "Missing ae_title", "backend %q needs ae_title, the PACS's AE title: the edge rewrites the called AE title to it.", s.Name)
		}
		if t := first(l, s.TLS, "tls"); t != nil {
			what := fmt.Sprintf("backend %q tls", s.Name)
			bt := &BackendTLS{
				CA:       l.paths(t.CA, what+".ca"),
				CertFile: l.filePath(t.CertFile, what+".cert_file", ""),
				KeyFile:  l.filePath(t.KeyFile, what+".key_file", ""),
			}
			switch {
			case t.CertFile != nil && t.KeyFile == nil:
				l.errorf(t.CertFile.Range, "Missing key_file", "%s.cert_file needs key_file, the file with its private key.", what)
			case t.KeyFile != nil && t.CertFile == nil:
				l.errorf(t.KeyFile.Range, "Missing cert_file", "%s.key_file needs cert_file, the certificate it belongs to.", what)
			}
			if v, ok := l.str(t.ServerName, ""); ok {
				bt.ServerName = v.s
			}
			b.TLS = bt
		}
		if !dup {
			out[s.Name] = b
			order = append(order, s.Name)
		}
	}
	return order
}

func (l *loader) rules(list []*ruleSchema, backends map[string]*Backend, backendOrder []string, listeners []*Listener) *Policy {
	p := &Policy{}
	byName := map[string]*Listener{}
	var names, tlsNames []string
	for _, ln := range listeners {
		byName[ln.Name] = ln
		names = append(names, ln.Name)
		if ln.TLS {
			tlsNames = append(tlsNames, ln.Name)
		}
	}
	p.tlsListeners = tlsNames
	seen := map[string]hcl.Range{}
	// covered maps a listener to the first rule that matches every
	// association on it: any later rule that can only match there is
	// unreachable.
	covered := map[string]coverer{}
	named := map[string]bool{} // listeners some rule names in when.listener
	for _, s := range list {
		if s.Name == "" {
			l.errorf(s.NameRange, "Empty rule name", "A rule needs a name, like rule \"clinic-a\": explanations and the audit trail refer to it.")
		} else if prev, dup := seen[s.Name]; dup {
			l.errorf(s.NameRange, "Duplicate rule name", "A rule named %q is already defined at %s.", s.Name, at(prev))
		} else {
			seen[s.Name] = s.NameRange
		}
		r := &rule{name: s.Name, rng: s.DefRange}
		when := first(l, s.When, "when")
		if when != nil {
			r.conds = l.when(when, byName, names)
		}
		// The listeners this rule can match on: those it names, or every
		// TLS listener when it names none.
		on := tlsNames
		onlyListener := true
		for _, c := range r.conds {
			if c.kind == condListener {
				r.listeners = true
				on = nil
				for _, pt := range c.pats {
					on = append(on, pt.lit)
					named[pt.lit] = true
				}
			} else {
				onlyListener = false
			}
		}
		if by, ok := coveredBy(covered, on); ok {
			what := "every association"
			if by.listeners {
				what += " on listener " + quoteList(on, "[]")
			}
			l.warnf(s.NameRange, "Unreachable rule", "rule %q can never match: rule %q before it (at %s) matches %s.", s.Name, by.name, at(by.rng), what)
		} else if r.listeners {
			l.plainClientCheck(s, r, on, byName)
		}
		if onlyListener {
			for _, name := range on {
				if _, ok := covered[name]; !ok {
					covered[name] = coverer{name: s.Name, rng: s.NameRange, listeners: r.listeners}
				}
			}
		}
		l.action(s, r, backends, backendOrder)
		r.decision.Rule = r.name
		r.decision.rule = r
		p.rules = append(p.rules, r)
	}
	for _, ln := range listeners {
		if !ln.TLS && !named[ln.Name] {
			l.warnf(l.listenerRng[ln.Name], "Listener no rule names", "listener %q is plain (tls = false) and no rule names it in when.listener: every association on it is rejected (a rule without listener applies to TLS listeners only).", ln.Name)
		}
	}
	l.moveDestinationsRouted(p, listeners)
	return p
}

// coverer is a rule that matches every association on some listeners.
type coverer struct {
	name      string
	rng       hcl.Range
	listeners bool // it names its listeners (else: every TLS listener)
}

// coveredBy returns the rule that already covers every one of on.
func coveredBy(covered map[string]coverer, on []string) (coverer, bool) {
	var by coverer
	for i, name := range on {
		c, ok := covered[name]
		if !ok {
			return coverer{}, false
		}
		if i == 0 {
			by = c
		}
	}
	return by, len(on) > 0
}

// plainClientCheck warns about a rule that names only plain listeners yet
// asks for a certificate attribute: no client has a certificate there.
func (l *loader) plainClientCheck(s *ruleSchema, r *rule, on []string, byName map[string]*Listener) {
	for _, name := range on {
		if ln := byName[name]; ln == nil || ln.TLS {
			return
		}
	}
	for _, c := range r.conds {
		if c.kind.clientKind() {
			l.warnf(s.NameRange, "Rule can never match", "rule %q names only plain listeners, where no client presents a certificate, yet requires %s: it can never match. Identify inside clients by source_cidr and calling_ae instead.", s.Name, c.kind)
			return
		}
	}
}

// moveDestinationsRouted warns, when the edge has a plain listener (a way
// out), about a move_destinations entry that no rule on a plain listener
// relays out: the C-MOVE is allowed in, but the PACS's sub-association to
// that destination (which arrives on the plain listener with the
// destination as its called AE title) would be rejected, so nothing moves.
func (l *loader) moveDestinationsRouted(p *Policy, listeners []*Listener) {
	plain := map[string]bool{}
	for _, ln := range listeners {
		if !ln.TLS {
			plain[ln.Name] = true
		}
	}
	if len(plain) == 0 {
		return
	}
	for _, r := range p.rules {
		for j, dest := range r.moveDest {
			if !routedOut(p.rules, plain, dest.text) {
				l.warnf(r.moveRng[j], "Move destination not routed out", "rule %q allows C-MOVE to %q, but no rule on a plain listener relays called_ae %q with C-STORE: the PACS's sub-association to it would be rejected and the move would transfer nothing.", r.name, dest.text, dest.text)
			}
		}
	}
}

// routedOut reports whether a relay rule naming a plain listener, with
// C-STORE allowed, matches called AE title dest (taken literally, so a
// pattern destination needs a pattern that covers it as written).
func routedOut(rules []*rule, plain map[string]bool, dest string) bool {
	for _, r := range rules {
		if r.decision.Action != ActionRelay || r.services&svcCStore == 0 || !r.listeners {
			continue
		}
		onPlain, calledOK := false, true
		for i := range r.conds {
			c := &r.conds[i]
			switch c.kind {
			case condListener:
				for _, pt := range c.pats {
					onPlain = onPlain || plain[pt.lit]
				}
			case condCalledAE:
				calledOK = c.anyPattern(dest)
			}
		}
		if onPlain && calledOK {
			return true
		}
	}
	return false
}

func (l *loader) when(s *whenSchema, listeners map[string]*Listener, listenerNames []string) []cond {
	var conds []cond
	if vals := l.strList(s.Listener); len(vals) > 0 {
		c := cond{kind: condListener}
		for _, v := range vals {
			if listeners[v.s] == nil {
				l.errorf(v.rng, "Unknown listener", "when.listener: %q is not a listener; defined listeners: %s.%s", v.s, quoteList(listenerNames, "[]"), didYouMean(v.s, listenerNames))
				continue
			}
			c.pats = append(c.pats, pattern{text: v.s, pat: v.s, lit: v.s, kind: patExact})
		}
		if len(c.pats) == 0 {
			c.pats = []pattern{{kind: patExact, lit: "\x00never"}}
		}
		conds = append(conds, c)
	}
	add := func(kind condKind, a *hcl.Attribute) {
		vals := l.strList(a)
		if len(vals) == 0 {
			return // absent or empty: no condition (every when attribute is optional)
		}
		c := cond{kind: kind}
		what := "when." + kind.String()
		for _, v := range vals {
			switch kind {
			case condSourceCIDR:
				if p, ok := l.cidr(v, what); ok {
					c.prefixes = append(c.prefixes, p)
				}
				continue
			case condCallingAE, condCalledAE:
				if ae, ok := l.aeTitle(v, what); ok {
					c.pats = append(c.pats, compilePattern(ae, false))
				}
				continue
			case condFingerprint:
				if fp, ok := l.fingerprint(v); ok {
					c.pats = append(c.pats, pattern{text: v.s, pat: fp, lit: fp, kind: patExact, fold: true})
				}
				continue
			}
			if s, ok := l.namePattern(v, what, kind == condCN); ok {
				// Certificate names and DNS are case-insensitive (RFC 4343);
				// URIs are compared as written.
				c.pats = append(c.pats, compilePattern(s, kind != condURI))
			}
		}
		if len(c.pats) == 0 && len(c.prefixes) == 0 {
			// Every element was invalid (already reported): keep the rule
			// from matching more than its author meant while diagnostics
			// are printed. The Config is not returned with errors anyway.
			c.pats = []pattern{{kind: patExact, lit: "\x00never"}}
		}
		conds = append(conds, c)
	}
	add(condCN, s.ClientCN)
	add(condDNS, s.ClientDNS)
	add(condURI, s.ClientURI)
	add(condEmail, s.ClientEmail)
	add(condFingerprint, s.ClientFingerprint)
	add(condSourceCIDR, s.SourceCIDR)
	add(condCallingAE, s.CallingAE)
	add(condCalledAE, s.CalledAE)
	return conds
}

// fingerprint normalises "sha256:<hex>" (also with colons between bytes, as
// `openssl x509 -fingerprint -sha256` prints it) to lower-case hex.
func (l *loader) fingerprint(v val) (string, bool) {
	s := strings.ToLower(strings.TrimSpace(v.s))
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if ok {
		hexPart = strings.ReplaceAll(hexPart, ":", "")
	}
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		l.errorf(v.rng, "Invalid fingerprint", "when.client_fingerprint: %q is not \"sha256:\" followed by the 64 hex digits of the certificate's SHA-256 hash.", v.s)
		return "", false
	}
	return "sha256:" + hexPart, true
}

func (l *loader) action(s *ruleSchema, r *rule, backends map[string]*Backend, backendOrder []string) {
	relay := first(l, s.Relay, "relay")
	answer := first(l, s.Answer, "answer")
	reject := first(l, s.Reject, "reject")
	var ranges []hcl.Range
	if relay != nil {
		ranges = append(ranges, relay.DefRange)
	}
	if answer != nil {
		ranges = append(ranges, answer.DefRange)
	}
	if reject != nil {
		ranges = append(ranges, reject.DefRange)
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].Start.Byte < ranges[j].Start.Byte })
	switch len(ranges) {
	case 0:
		l.errorf(s.DefRange, "Rule has no action", "rule %q must say what to do: give it exactly one of relay { ... }, answer {} or reject { ... }.", s.Name)
		r.decision.Action, r.decision.Reject = ActionReject, rejectReasons["no-reason"]
		return
	case 1:
	default:
		l.errorf(ranges[1], "Rule has more than one action", "rule %q has %d actions; give exactly one of relay, answer or reject (the first is at %s).", s.Name, len(ranges), at(ranges[0]))
	}
	// Every action block present is checked, so that a rule with two
	// actions still gets its other mistakes reported.
	if reject != nil {
		r.decision.Action = ActionReject
		v, ok := l.str(reject.Reason, "no-reason")
		rj, known := rejectReasons[v.s]
		if ok && !known {
			l.enum(v, "reject reason", rejectReasonNames)
		}
		if !known {
			rj = rejectReasons["no-reason"]
		}
		if l.boolean(reject.Transient) {
			rj.Result = 2
		}
		r.decision.Reject = rj
	}
	if answer != nil {
		r.decision.Action = ActionAnswer
		r.services = svcCEcho
		r.decision.Services = []string{"C-ECHO"}
	}
	if relay != nil {
		l.relay(s.Name, relay, r, backends, backendOrder)
	}
}

func (l *loader) relay(name string, s *relaySchema, r *rule, backends map[string]*Backend, backendOrder []string) {
	r.decision.Action = ActionRelay
	if v, ok := l.str(s.Backend, ""); ok {
		if b := backends[v.s]; b != nil {
			r.decision.Backend = b
		} else if len(backendOrder) == 0 {
			l.errorf(v.rng, "Unknown backend", "rule %q relays to backend %q, but no backend block is defined.", name, v.s)
		} else {
			l.errorf(v.rng, "Unknown backend", "rule %q relays to backend %q, which is not defined; defined backends: %s.%s", name, v.s, quoteList(backendOrder, "[]"), didYouMean(v.s, backendOrder))
		}
	} else if s.Backend == nil {
		l.errorf(s.DefRange, "Missing backend", "A relay block needs backend = \"<name>\", naming a backend block.")
	}

	if s.Services == nil {
		r.services = svcAll
	} else {
		before := len(l.diags)
		vals := l.strList(s.Services)
		if len(vals) == 0 && len(l.diags) == before {
			l.errorf(s.Services.Expr.Range(), "Empty services", "rule %q: services = [] would allow no DIMSE service at all; name the services, or leave the attribute out to allow every one.", name)
		}
		for _, v := range vals {
			bit := serviceBit(v.s)
			if bit == 0 {
				detail := fmt.Sprintf("%q is not a DIMSE service; use one of %s.%s", v.s, quoteList(serviceNames, "[]"), didYouMean(v.s, serviceNames))
				if v.s == "C-CANCEL" {
					detail = "C-CANCEL need not be listed: it is allowed whenever C-FIND, C-GET or C-MOVE is."
				}
				l.add(hcl.DiagError, v.rng, "Unknown DIMSE service", detail)
				continue
			}
			if r.services&bit == 0 {
				r.decision.Services = append(r.decision.Services, v.s)
			}
			r.services |= bit
		}
	}

	for _, v := range l.strList(s.SOPClasses) {
		uid := strings.TrimSpace(v.s)
		if !validUID(uid) {
			l.errorf(v.rng, "Invalid SOP class UID", "rule %q sop_classes: %q is not a UID (digits and dots, at most 64 characters, PS3.5 9.1).", name, v.s)
			continue
		}
		if r.sopClasses == nil {
			r.sopClasses = map[string]struct{}{}
		}
		if _, dup := r.sopClasses[uid]; !dup {
			r.decision.SOPClasses = append(r.decision.SOPClasses, uid)
		}
		r.sopClasses[uid] = struct{}{}
	}

	for _, v := range l.strList(s.MoveDestinations) {
		if ae, ok := l.aeTitle(v, fmt.Sprintf("rule %q move_destinations", name)); ok {
			r.moveDest = append(r.moveDest, compilePattern(ae, false))
			r.moveRng = append(r.moveRng, v.rng)
			r.decision.MoveDestinations = append(r.decision.MoveDestinations, ae)
		}
	}
	if len(r.moveDest) > 0 && r.services&svcCMove == 0 {
		l.warnf(s.MoveDestinations.Expr.Range(), "move_destinations without C-MOVE", "rule %q lists move destinations but its services do not include C-MOVE, so they have no effect.", name)
	}
}

// validUID checks PS3.5 9.1: components of digits separated by dots, no
// leading zero in a multi-digit component, at most 64 characters.
func validUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, comp := range strings.Split(s, ".") {
		if comp == "" || (len(comp) > 1 && comp[0] == '0') || strings.Trim(comp, "0123456789") != "" {
			return false
		}
	}
	return true
}
