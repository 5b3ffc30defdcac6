package policy

import (
	"fmt"
	"net"
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
	// DefaultWarnExpiry is how close to its expiry a client certificate
	// gets tls.expiring records: time to call the clinic.
	DefaultWarnExpiry = 14 * 24 * time.Hour
	// MaxWarnExpiry bounds tls.warn_expiry: beyond a year every
	// certificate would be "expiring" every day.
	MaxWarnExpiry        = 366 * 24 * time.Hour
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultAuditFile     = "var/audit/audit.jsonl"
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
	deids       map[string]*Deidentify // deidentify blocks, for the rules
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
	l.spool(first(l, fs.Spool, "spool"), &cfg.Spool)
	order := l.backends(fs.Backends, cfg.Backends)
	cfg.Deidentify = l.deidentifyBlocks(fs.Deid)
	l.deids = cfg.Deidentify
	cfg.Policy = l.rules(fs.Rules, cfg.Backends, order, cfg.Listeners)
	l.admin(first(l, fs.Admin, "admin"), &cfg.Admin, &cfg.Edge)
	return cfg
}
