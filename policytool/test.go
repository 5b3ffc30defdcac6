package policytool

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// EdgeListener is the name of the edge block's own TLS listener, the
// listener of a test case or an audit record that names none.
const EdgeListener = policy.EdgeListener

// The gohcl schema of a policy test file (README.md, "Changing the policy
// safely"). No struct has a remain field, so gohcl refuses unknown
// attributes and blocks with their position; attributes whose value is
// checked are *hcl.Attribute, so that a bad value is reported where it is.
type testFileSchema struct {
	Tests []*testSchema `hcl:"test,block"`
}

type testSchema struct {
	Name      string          `hcl:"name,label"`
	NameRange hcl.Range       `hcl:"name,label_range"`
	Listener  *hcl.Attribute  `hcl:"listener,optional"`
	Cert      *hcl.Attribute  `hcl:"cert,optional"`
	Client    []*clientSchema `hcl:"client,block"`
	SourceIP  *hcl.Attribute  `hcl:"source_ip,optional"`
	CallingAE *hcl.Attribute  `hcl:"calling_ae,optional"` // required, checked by the decoder
	CalledAE  *hcl.Attribute  `hcl:"called_ae,optional"`
	Expect    []*expectSchema `hcl:"expect,block"`
	DefRange  hcl.Range       `hcl:",def_range"`
}

type clientSchema struct {
	CN          *hcl.Attribute `hcl:"cn,optional"`
	DNS         *hcl.Attribute `hcl:"dns,optional"`
	URI         *hcl.Attribute `hcl:"uri,optional"`
	Email       *hcl.Attribute `hcl:"email,optional"`
	Fingerprint *hcl.Attribute `hcl:"fingerprint,optional"`
	DefRange    hcl.Range      `hcl:",def_range"`
}

type expectSchema struct {
	Decision                *hcl.Attribute `hcl:"decision,optional"` // required, checked by the decoder
	Rule                    *hcl.Attribute `hcl:"rule,optional"`
	Backend                 *hcl.Attribute `hcl:"backend,optional"`
	Reason                  *hcl.Attribute `hcl:"reason,optional"`
	Allows                  *hcl.Attribute `hcl:"allows,optional"`
	Denies                  *hcl.Attribute `hcl:"denies,optional"`
	MoveDestinationsAllowed *hcl.Attribute `hcl:"move_destinations_allowed,optional"`
	MoveDestinationsDenied  *hcl.Attribute `hcl:"move_destinations_denied,optional"`
	DefRange                hcl.Range      `hcl:",def_range"`
}

// TestCase is one test block: an association request and what the policy
// must decide for it.
type TestCase struct {
	Name     string
	Range    hcl.Range // the block's header, for reports
	Listener string    // "edge" when the block names none
	Input    policy.Input
	Expect   Expect
}

// Expect is a test's expect block. Nil pointers and nil slices are
// attributes that were not given and are not checked.
type Expect struct {
	Decision                string // "answer" | "relay" | "reject"
	Rule                    *string
	Backend                 *string
	Reason                  *string
	Allows, Denies          []string
	MoveDestinationsAllowed []string
	MoveDestinationsDenied  []string
}

// TestSuite is the test cases of one or more files, with their sources for
// diagnostics.
type TestSuite struct {
	Cases []*TestCase
	Files map[string]*hcl.File
	names map[string]hcl.Range
}

// LoadTestFiles parses and decodes every file; names must be unique across
// them. Relative cert paths are read from the directory of the file that
// names them. Every problem found is returned at once.
func LoadTestFiles(paths ...string) (*TestSuite, hcl.Diagnostics) {
	s := &TestSuite{Files: map[string]*hcl.File{}, names: map[string]hcl.Range{}}
	var diags hcl.Diagnostics
	for _, p := range paths {
		src, err := ReadSourceFile(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Failed to read test file",
				Detail: fmt.Sprintf("The file %q could not be read: %s.", p, err)})
			continue
		}
		diags = append(diags, s.Add(p, src)...)
	}
	return s, diags
}

// Add decodes the test blocks of src, named filename, into s.
func (s *TestSuite) Add(filename string, src []byte) hcl.Diagnostics {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	s.Files[filename] = file
	if file == nil || file.Body == nil || diags.HasErrors() {
		return diags
	}
	var fs testFileSchema
	diags = append(diags, gohcl.DecodeBody(file.Body, nil, &fs)...)
	d := &decoder{base: filepath.Dir(filename)}
	for _, ts := range fs.Tests {
		tc := d.test(ts)
		if prev, dup := s.names[ts.Name]; dup {
			d.errorf(ts.NameRange, "Duplicate test name", "A test named %q is already defined at %s; give each test its own name.", ts.Name, at(prev))
			continue
		}
		s.names[ts.Name] = ts.NameRange
		if tc != nil {
			s.Cases = append(s.Cases, tc)
		}
	}
	diags = append(diags, d.diags...)
	sortDiagnostics(diags)
	return diags
}

func at(r hcl.Range) string { return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column) }

type decoder struct {
	base  string
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary,
		Detail: fmt.Sprintf(format, args...), Subject: &r})
}

// str decodes an optional string attribute; ok is false when it is absent
// or not a string (then the problem is already reported).
func (d *decoder) str(a *hcl.Attribute) (string, bool) {
	if a == nil {
		return "", false
	}
	var s string
	ds := gohcl.DecodeExpression(a.Expr, nil, &s)
	d.diags = append(d.diags, ds...)
	return s, !ds.HasErrors()
}

// aeTitle decodes a test's AE title. A title the edge refuses before any
// rule decides (empty, only spaces, or not a VR AE value) is an error here:
// a test of it would pass a decision the live edge never makes.
func (d *decoder) aeTitle(a *hcl.Attribute, name string) string {
	s, ok := d.str(a)
	if !ok {
		return s
	}
	if t := association.TrimAE(s); t == "" || !association.ValidAE(t) {
		d.errorf(a.Expr.Range(), "Invalid AE title", "%s = %s: the edge refuses an A-ASSOCIATE-RQ whose AE title is empty, only spaces, longer than 16 characters, or has a control character, backslash or non-ASCII character (PS3.5 VR AE, PS3.8 9.3.2).", name, Printable(strconv.Quote(s)))
	}
	return s
}

// required reports a missing attribute at the block that lacks it (gohcl
// does not enforce required *hcl.Attribute fields) and passes a through.
func (d *decoder) required(a *hcl.Attribute, name string, block hcl.Range) *hcl.Attribute {
	if a == nil {
		d.errorf(block, "Missing required argument", "The argument %q is required.", name)
	}
	return a
}

func (d *decoder) strPtr(a *hcl.Attribute) *string {
	if s, ok := d.str(a); ok {
		return &s
	}
	return nil
}

// list decodes an optional list of strings; absent is nil, [] is empty.
func (d *decoder) list(a *hcl.Attribute) []string {
	if a == nil {
		return nil
	}
	var xs []string
	ds := gohcl.DecodeExpression(a.Expr, nil, &xs)
	d.diags = append(d.diags, ds...)
	if xs == nil {
		xs = []string{}
	}
	return xs
}

// oneOf checks that every value of a is one of allowed.
func (d *decoder) oneOf(a *hcl.Attribute, vals []string, what string, allowed []string) bool {
	ok := true
	for _, v := range vals {
		if !slices.Contains(allowed, v) {
			d.errorf(a.Expr.Range(), "Unknown "+what, "%s is not a known %s; use one of %s.", strconv.Quote(v), what, strings.Join(allowed, ", "))
			ok = false
		}
	}
	return ok
}

func (d *decoder) test(ts *testSchema) *TestCase {
	tc := &TestCase{Name: ts.Name, Range: ts.DefRange, Listener: EdgeListener}
	before := len(d.diags)
	if l, ok := d.str(ts.Listener); ok {
		if l == "" {
			d.errorf(ts.Listener.Expr.Range(), "Empty listener name", "listener must name a listener; leave it out for the TLS listener %q.", EdgeListener)
		}
		tc.Listener = l
	}
	in := &tc.Input
	if len(ts.Client) > 1 {
		d.errorf(ts.Client[1].DefRange, "Duplicate client block", "A test describes one client; the first client block is at %s.", at(ts.Client[0].DefRange))
	}
	switch {
	case ts.Cert != nil && len(ts.Client) > 0:
		d.errorf(ts.Cert.Range, "Both cert and client", "Describe the client either by its certificate (cert) or by a client block, not both.")
	case ts.Cert != nil:
		if p, ok := d.str(ts.Cert); ok {
			d.cert(ts.Cert, p, in)
		}
	case len(ts.Client) > 0:
		d.client(ts.Client[0], in)
	}
	if ip, ok := d.str(ts.SourceIP); ok {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			d.errorf(ts.SourceIP.Expr.Range(), "Invalid IP address", "source_ip = %q is not an IP address.", ip)
		}
		in.SourceIP = addr
	}
	in.CallingAE = d.aeTitle(d.required(ts.CallingAE, "calling_ae", ts.DefRange), "calling_ae")
	in.CalledAE = d.aeTitle(d.required(ts.CalledAE, "called_ae", ts.DefRange), "called_ae")
	switch len(ts.Expect) {
	case 0:
		d.errorf(ts.DefRange, "Missing expect block", "test %q must say what the policy should decide, in an expect block.", ts.Name)
	case 1:
	default:
		d.errorf(ts.Expect[1].DefRange, "Duplicate expect block", "A test has one expect block; the first is at %s.", at(ts.Expect[0].DefRange))
	}
	if len(ts.Expect) > 0 {
		d.expect(ts.Expect[0], &tc.Expect)
	}
	if len(d.diags) > before {
		return nil
	}
	return tc
}

func (d *decoder) client(cs *clientSchema, in *policy.Input) {
	in.CN, _ = d.str(cs.CN)
	in.DNS, in.URI, in.Email = d.list(cs.DNS), d.list(cs.URI), d.list(cs.Email)
	if fp, ok := d.str(cs.Fingerprint); ok && fp != "" {
		hexPart, found := strings.CutPrefix(strings.ToLower(fp), "sha256:")
		if !found || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
			d.errorf(cs.Fingerprint.Expr.Range(), "Invalid fingerprint", "fingerprint = %q is not \"sha256:\" followed by the 64 hex digits of the certificate's SHA-256 hash.", fp)
		}
		in.Fingerprint = "sha256:" + hexPart
	}
}

// cert takes the client's identity from a PEM certificate, as the edge
// takes it from the verified chain's leaf.
func (d *decoder) cert(a *hcl.Attribute, p string, in *policy.Input) {
	if p != "" && !filepath.IsAbs(p) {
		p = filepath.Join(d.base, p)
	}
	leaf, err := ReadCertificate(p)
	if err != nil {
		d.errorf(a.Expr.Range(), "Unreadable certificate", "cert: %s.", err)
		return
	}
	id := tlslayer.IdentityFromCertificate(leaf)
	in.CN, in.DNS, in.URI, in.Email, in.Fingerprint = id.CN, id.DNS, id.URI, id.Email, id.Fingerprint
}

// maxCertFile bounds what ReadCertificate reads: a PEM chain is a few
// kilobytes, and a test file may name any path (a device, a FIFO).
const maxCertFile = 1 << 20

// ReadCertificate returns the first CERTIFICATE block of a PEM file, which
// must be a regular file of at most 1 MiB.
func ReadCertificate(path string) (*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	switch {
	case err != nil:
		return nil, err
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file", path)
	case st.Size() > maxCertFile:
		return nil, fmt.Errorf("%s: larger than %d bytes, not a certificate", path, maxCertFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCertFile))
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return cert, nil
		}
	}
}

var decisions = []string{"answer", "relay", "reject"}

// services a test may name: the rule's services and C-CANCEL, which a rule
// allows with the operations it cancels.
var testServices = append(policy.ServiceNames(), "C-CANCEL")

func (d *decoder) expect(es *expectSchema, e *Expect) {
	if v, ok := d.str(d.required(es.Decision, "decision", es.DefRange)); ok {
		d.oneOf(es.Decision, []string{v}, "decision", decisions)
		e.Decision = v
	}
	e.Rule, e.Backend = d.strPtr(es.Rule), d.strPtr(es.Backend)
	if e.Reason = d.strPtr(es.Reason); e.Reason != nil {
		d.oneOf(es.Reason, []string{*e.Reason}, "reject reason", policy.RejectReasonNames())
	}
	if e.Allows = d.list(es.Allows); e.Allows != nil {
		d.oneOf(es.Allows, e.Allows, "service", testServices)
	}
	if e.Denies = d.list(es.Denies); e.Denies != nil {
		d.oneOf(es.Denies, e.Denies, "service", testServices)
	}
	e.MoveDestinationsAllowed = d.list(es.MoveDestinationsAllowed)
	e.MoveDestinationsDenied = d.list(es.MoveDestinationsDenied)
}

// Run evaluates the case under cfg and returns what differed from its
// expectations, one entry per attribute that does not hold, in the order
// expect lists them; nil means the test passes.
func (tc *TestCase) Run(cfg *policy.Config) []string {
	if !HasListener(cfg, tc.Listener) {
		return []string{fmt.Sprintf("listener %q is not in the policy", tc.Listener)}
	}
	in := tc.Input
	d := Evaluate(cfg, tc.Listener, &in)
	var out []string
	differ := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	e := &tc.Expect
	if got := d.Action.String(); got != e.Decision {
		differ("decision %s, want %s", got, e.Decision)
	}
	if e.Rule != nil && d.Rule != *e.Rule {
		differ("rule %s, want %s", ruleName(d.Rule), ruleName(*e.Rule))
	}
	if e.Backend != nil {
		switch {
		case d.Action != policy.ActionRelay:
			differ("no backend (decision %s), want backend %q", d.Action, *e.Backend)
		case d.Backend.Name != *e.Backend:
			differ("backend %q, want %q", d.Backend.Name, *e.Backend)
		}
	}
	if e.Reason != nil {
		switch {
		case d.Action != policy.ActionReject:
			differ("no reject reason (decision %s), want reason %s", d.Action, *e.Reason)
		case d.Reject.ReasonName != *e.Reason:
			differ("reason %s, want %s", d.Reject.ReasonName, *e.Reason)
		}
	}
	for _, s := range e.Allows {
		if !d.AllowsService(s) {
			differ("%s denied, want allowed", s)
		}
	}
	for _, s := range e.Denies {
		if d.AllowsService(s) {
			differ("%s allowed, want denied", s)
		}
	}
	for _, ae := range e.MoveDestinationsAllowed {
		if !MoveAllowed(&d, ae) {
			differ("C-MOVE to %q denied, want allowed", ae)
		}
	}
	for _, ae := range e.MoveDestinationsDenied {
		if MoveAllowed(&d, ae) {
			differ("C-MOVE to %q allowed, want denied", ae)
		}
	}
	return out
}

// MoveAllowed reports whether the edge would forward a C-MOVE naming ae as
// its destination: the rule must allow C-MOVE and the destination.
func MoveAllowed(d *policy.Decision, ae string) bool {
	return d.AllowsService("C-MOVE") && d.AllowsMoveDestination(ae)
}

func ruleName(r string) string {
	if r == "" {
		return "(none)"
	}
	return strconv.Quote(r)
}

// HasListener reports whether cfg serves the listener called name ("" is
// the edge block's own).
func HasListener(cfg *policy.Config, name string) bool {
	return cfg.Listener(name) != nil
}

// Evaluate decides in as the edge would for a request arriving on the named
// listener.
func Evaluate(cfg *policy.Config, listener string, in *policy.Input) policy.Decision {
	in.Listener = listener
	return cfg.Policy.Evaluate(in)
}

// Printable returns s as it may be shown on a terminal: unchanged when it
// holds only printable characters, else quoted with escapes, so that a
// control or bidirectional-override character cannot disguise a name.
func Printable(s string) string {
	for _, r := range s {
		// IsPrint is false for control (Cc) and format (Cf) characters,
		// which include the bidirectional overrides U+202A-U+202E and
		// U+2066-U+2069.
		if !strconv.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// sortDiagnostics puts the diagnostics of one file in source order (gohcl
// reports a block's problems before the values checked after decoding).
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		return a.Start.Byte < b.Start.Byte
	})
}
