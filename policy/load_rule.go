package policy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

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

	sf := false
	var sfRng hcl.Range
	why := "store_and_forward = true"
	if s.StoreAndForward != nil {
		sf, sfRng = l.boolean(s.StoreAndForward), s.StoreAndForward.Range
	}
	if b := r.decision.Backend; b != nil && b.DICOMweb != nil {
		if s.StoreAndForward != nil && !sf {
			l.errorf(s.StoreAndForward.Expr.Range(), "DICOMweb backend needs store-and-forward", "rule %q relays to the DICOMweb backend %q, which is store-and-forward by nature; remove store_and_forward = false.", name, b.Name)
		}
		if s.StoreAndForward == nil {
			sfRng = s.Backend.Range
		}
		sf, why = true, fmt.Sprintf("backend %q is a DICOMweb destination", b.Name)
	}
	if sf {
		l.storeAndForward(name, s, r, sfRng, why)
	}

	if s.Services == nil {
		if !sf {
			r.services = svcAll
		}
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
	r.decision.AllowUnsortedDataSets = l.boolean(s.AllowUnsortedDataSets)
	l.relayDeidentify(name, s, r)
	if len(r.moveDest) > 0 && r.services&svcCMove == 0 && !r.decision.StoreAndForward {
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
