package policy

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"

	"github.com/dicomedge/dicomedge/association"
)

// pattern is one compiled glob: '*' matches any run of characters, '?'
// exactly one. Most patterns in practice are exact names or a prefix with a
// trailing '*', so those get a plain string comparison instead of the
// general matcher.
type pattern struct {
	text string // as written, for explanations
	pat  string // what is matched (lower-cased when fold)
	lit  string // exact: pat; prefix/suffix: the literal part
	kind patternKind
	fold bool // ASCII case-insensitive (certificate names, DNS)
}

type patternKind uint8

const (
	patExact  patternKind = iota
	patAny                // "*"
	patPrefix             // "ABC*"
	patSuffix             // "*.example.org"
	patGlob               // anything else with wildcards
)

func compilePattern(text string, fold bool) pattern {
	p := pattern{text: text, pat: text, fold: fold}
	if fold {
		p.pat = lowerASCII(text)
	}
	stars := strings.Count(p.pat, "*")
	quests := strings.Count(p.pat, "?")
	switch {
	case stars == 0 && quests == 0:
		p.kind, p.lit = patExact, p.pat
	case quests == 0 && strings.Trim(p.pat, "*") == "":
		p.kind = patAny
	case quests == 0 && stars == 1 && strings.HasSuffix(p.pat, "*"):
		p.kind, p.lit = patPrefix, p.pat[:len(p.pat)-1]
	case quests == 0 && stars == 1 && strings.HasPrefix(p.pat, "*"):
		p.kind, p.lit = patSuffix, p.pat[1:]
	default:
		p.kind = patGlob
	}
	return p
}

func (p *pattern) match(s string) bool {
	switch p.kind {
	case patAny:
		return true
	case patExact:
		return len(s) == len(p.lit) && hasPrefixFold(s, p.lit, p.fold)
	case patPrefix:
		return len(s) >= len(p.lit) && hasPrefixFold(s, p.lit, p.fold)
	case patSuffix:
		return len(s) >= len(p.lit) && hasPrefixFold(s[len(s)-len(p.lit):], p.lit, p.fold)
	}
	return globMatch(p.pat, s, p.fold)
}

// hasPrefixFold reports whether s starts with lit; lit is already lower-case
// when fold is set.
func hasPrefixFold(s, lit string, fold bool) bool {
	if len(s) < len(lit) {
		return false
	}
	if !fold {
		return s[:len(lit)] == lit
	}
	for i := 0; i < len(lit); i++ {
		if lowerByte(s[i]) != lit[i] {
			return false
		}
	}
	return true
}

// globMatch is the usual linear-backtracking wildcard matcher: on a mismatch
// it retries from the last '*' one character further on, so it needs no
// allocation and at most len(p)*len(s) steps. '?' consumes one UTF-8
// character, not one byte.
func globMatch(p, s string, fold bool) bool {
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		if px < len(p) {
			switch c := p[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				_, n := utf8.DecodeRuneInString(s[sx:])
				px++
				sx += n
				continue
			default:
				b := s[sx]
				if fold {
					b = lowerByte(b)
				}
				if b == c {
					px++
					sx++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		_, n := utf8.DecodeRuneInString(s[starS:])
		starS += n
		px, sx = starP+1, starS
	}
	for px < len(p) && p[px] == '*' {
		px++
	}
	return px == len(p)
}

func lowerByte(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerByte(b[j])
			}
			return string(b)
		}
	}
	return s
}

// trimAE is association.TrimAE: policy must compare titles normalised
// exactly as the codec normalises what it decodes and forwards.
func trimAE(s string) string { return association.TrimAE(s) }

// condKind names a when attribute; the order is the order Explain reports in.
type condKind uint8

const (
	condListener condKind = iota
	condCN
	condDNS
	condURI
	condEmail
	condFingerprint
	condSourceCIDR
	condCallingAE
	condCalledAE
)

var condNames = [...]string{
	condListener:    "listener",
	condCN:          "client_cn",
	condDNS:         "client_dns",
	condURI:         "client_uri",
	condEmail:       "client_email",
	condFingerprint: "client_fingerprint",
	condSourceCIDR:  "source_cidr",
	condCallingAE:   "calling_ae",
	condCalledAE:    "called_ae",
}

func (k condKind) String() string { return condNames[k] }

// clientKind reports whether the attribute is read from the client's
// certificate, which a plain listener has none of.
func (k condKind) clientKind() bool { return k >= condCN && k <= condFingerprint }

// cond is one when attribute with at least one element.
type cond struct {
	kind     condKind
	pats     []pattern      // every kind but source_cidr
	prefixes []netip.Prefix // source_cidr
}

func (c *cond) anyPattern(s string) bool {
	for i := range c.pats {
		if c.pats[i].match(s) {
			return true
		}
	}
	return false
}

func (c *cond) anyOf(values []string) bool {
	for _, v := range values {
		if c.anyPattern(v) {
			return true
		}
	}
	return false
}

// match reports whether in satisfies the condition; plain says the
// listener has no TLS, so no certificate attribute can match there.
func (c *cond) match(in *Input, plain bool) bool {
	if plain && c.kind.clientKind() {
		return false
	}
	switch c.kind {
	case condListener:
		return c.anyPattern(listenerName(in))
	case condCN:
		return c.anyPattern(in.CN)
	case condDNS:
		return c.anyOf(in.DNS)
	case condURI:
		return c.anyOf(in.URI)
	case condEmail:
		return c.anyOf(in.Email)
	case condFingerprint:
		return in.Fingerprint != "" && c.anyPattern(in.Fingerprint)
	case condSourceCIDR:
		// An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d, and
		// a link-local one with a zone, which Prefix.Contains would refuse.
		ip := in.SourceIP.Unmap().WithZone("")
		if !ip.IsValid() {
			return false
		}
		for _, p := range c.prefixes {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	case condCallingAE:
		return c.anyPattern(trimAE(in.CallingAE))
	case condCalledAE:
		return c.anyPattern(trimAE(in.CalledAE))
	}
	return false
}

// rule is one compiled rule. decision is prepared at load time so that
// Evaluate only copies it.
type rule struct {
	name     string
	conds    []cond
	decision Decision

	// listeners is when.listener given: without it the rule applies to
	// TLS listeners only, so that a catch-all cannot make a plain inside
	// port an open relay.
	listeners  bool
	services   serviceSet          // relay; answer is C-ECHO only
	sopClasses map[string]struct{} // nil = all
	moveDest   []pattern           // empty = none
	moveRng    []hcl.Range         // where each move destination is written
	rng        hcl.Range           // the rule's definition, for explanations
}

func (r *rule) matches(in *Input, plain bool) bool {
	if plain && !r.listeners {
		return false
	}
	for i := range r.conds {
		if !r.conds[i].match(in, plain) {
			return false
		}
	}
	return true
}

// Policy is the compiled, immutable rule set of one configuration.
type Policy struct {
	rules []*rule
	// tlsListeners names the TLS listeners ("edge" and every listener
	// block with tls = true). Any other name is treated as plain, so an
	// input naming a listener the policy does not know matches only rules
	// that name it, and none does.
	tlsListeners []string
}

// listenerName is the input's listener, "edge" when unset.
func listenerName(in *Input) string {
	if in.Listener == "" {
		return EdgeListener
	}
	return in.Listener
}

// plain reports whether in arrived on a plain (or unknown) listener.
func (p *Policy) plain(in *Input) bool {
	name := listenerName(in)
	if name == EdgeListener {
		return false
	}
	for _, l := range p.tlsListeners {
		if l == name {
			return false
		}
	}
	return true
}

// noMatch is the decision when no rule matches: A-ASSOCIATE-RJ, permanent,
// service user, calling AE title not recognized (PS3.8 9.3.4; docs/policy.md).
var noMatch = Decision{Action: ActionReject, Reject: rejectReasons["calling-ae-not-recognized"]}

// Rules returns the rule names in file order.
func (p *Policy) Rules() []string {
	if p == nil {
		return nil
	}
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// Evaluate decides on in: the first rule in file order whose when matches
// decides; no match is a permanent reject, reason 3. It does no I/O and, for
// the policies and inputs seen in practice, no allocation. A nil Policy or a
// nil Input rejects.
func (p *Policy) Evaluate(in *Input) Decision {
	if p == nil || in == nil {
		return noMatch
	}
	plain := p.plain(in)
	for _, r := range p.rules {
		if r.matches(in, plain) {
			return r.decision
		}
	}
	return noMatch
}

// String is the decision as `policy explain` prints it: "answer",
// "relay <backend>" or "reject <reason>".
func (d Decision) String() string {
	switch d.Action {
	case ActionAnswer:
		return "answer"
	case ActionRelay:
		if d.Backend != nil {
			return "relay " + d.Backend.Name
		}
		return "relay"
	}
	return "reject " + d.Reject.ReasonName
}

// AllowsService reports whether the DIMSE service name ("C-ECHO", "C-STORE",
// "C-FIND", "C-GET", "C-MOVE", "N-EVENT-REPORT", "N-GET", "N-SET",
// "N-ACTION", "N-CREATE", "N-DELETE") may be used on the association. An
// answered association allows C-ECHO only; a rejected one nothing. C-CANCEL
// is allowed whenever one of the services it can cancel (C-FIND, C-GET,
// C-MOVE) is, since it only stops an operation that was itself allowed.
func (d *Decision) AllowsService(name string) bool {
	switch d.Action {
	case ActionAnswer:
		return name == "C-ECHO"
	case ActionRelay:
		if d.rule == nil {
			return false
		}
		if name == "C-CANCEL" {
			return d.rule.services&(svcCFind|svcCGet|svcCMove) != 0
		}
		bit := serviceBit(name)
		return bit != 0 && d.rule.services&bit != 0
	}
	return false
}

// AllowsSOPClass reports whether abstract syntax uid may be used. Trailing
// NUL and space padding (as UIDs carry on the wire) is ignored. Only relay
// rules restrict SOP classes; an answered association is limited by its
// services (Verification) instead.
func (d *Decision) AllowsSOPClass(uid string) bool {
	switch d.Action {
	case ActionAnswer:
		return true
	case ActionRelay:
		if d.rule == nil {
			return false
		}
		if d.rule.sopClasses == nil {
			return true
		}
		_, ok := d.rule.sopClasses[strings.TrimRight(uid, "\x00 ")]
		return ok
	}
	return false
}

// AllowsMoveDestination reports whether a C-MOVE may name ae as its
// destination (spaces around ae are not significant). With no
// move_destinations in the rule, none is allowed.
func (d *Decision) AllowsMoveDestination(ae string) bool {
	if d.Action != ActionRelay || d.rule == nil {
		return false
	}
	ae = trimAE(ae)
	if !association.ValidAE(ae) {
		// A destination with a control character or backslash could be read
		// as another title by the backend; no pattern may admit it.
		return false
	}
	for i := range d.rule.moveDest {
		if d.rule.moveDest[i].match(ae) {
			return true
		}
	}
	return false
}

// serviceSet is a bit per DIMSE service (PS3.7 sections 9 and 10).
type serviceSet uint16

const (
	svcCStore serviceSet = 1 << iota
	svcCGet
	svcCFind
	svcCMove
	svcCEcho
	svcNEventReport
	svcNGet
	svcNSet
	svcNAction
	svcNCreate
	svcNDelete

	svcAll = svcCStore | svcCGet | svcCFind | svcCMove | svcCEcho | svcNEventReport | svcNGet | svcNSet |
		svcNAction | svcNCreate | svcNDelete
)

// serviceNames lists the names policy.hcl accepts, in PS3.7 order.
var serviceNames = []string{"C-STORE", "C-GET", "C-FIND", "C-MOVE", "C-ECHO",
	"N-EVENT-REPORT", "N-GET", "N-SET", "N-ACTION", "N-CREATE", "N-DELETE"}

func serviceBit(name string) serviceSet {
	switch name {
	case "C-STORE":
		return svcCStore
	case "C-GET":
		return svcCGet
	case "C-FIND":
		return svcCFind
	case "C-MOVE":
		return svcCMove
	case "C-ECHO":
		return svcCEcho
	case "N-EVENT-REPORT":
		return svcNEventReport
	case "N-GET":
		return svcNGet
	case "N-SET":
		return svcNSet
	case "N-ACTION":
		return svcNAction
	case "N-CREATE":
		return svcNCreate
	case "N-DELETE":
		return svcNDelete
	}
	return 0
}

// rejectReasons are the A-ASSOCIATE-RJ service-user reasons of PS3.8 9.3.4
// (Table 9-21) that policy.hcl can name. transient = true changes Result to 2.
var rejectReasons = map[string]Reject{
	"no-reason":                         {Result: 1, Source: 1, Reason: 1, ReasonName: "no-reason"},
	"application-context-not-supported": {Result: 1, Source: 1, Reason: 2, ReasonName: "application-context-not-supported"},
	"calling-ae-not-recognized":         {Result: 1, Source: 1, Reason: 3, ReasonName: "calling-ae-not-recognized"},
	"called-ae-not-recognized":          {Result: 1, Source: 1, Reason: 7, ReasonName: "called-ae-not-recognized"},
}

var rejectReasonNames = []string{"no-reason", "application-context-not-supported", "calling-ae-not-recognized", "called-ae-not-recognized"}

// ServiceNames returns the DIMSE service names relay.services accepts, in
// PS3.7 order (for tools that check names against the same list).
func ServiceNames() []string { return append([]string(nil), serviceNames...) }

// RejectReasonNames returns the names reject.reason accepts.
func RejectReasonNames() []string { return append([]string(nil), rejectReasonNames...) }
