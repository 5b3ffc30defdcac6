package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Explain is Evaluate with reasons: one Step per rule tried, in file order,
// up to and including the one that matched. A rule that did not match names
// the first of its when attributes (in schema order) that failed, e.g.
// `rule "clinic-a": calling_ae "CT9" does not match ["CLINA_*"]`. Unlike
// Evaluate it allocates; it is meant for `policy explain` and debugging.
func (p *Policy) Explain(in *Input) Explanation {
	if in == nil {
		in = &Input{}
	}
	var e Explanation
	if p != nil {
		plain := p.plain(in)
		for _, r := range p.rules {
			if plain && !r.listeners {
				e.Steps = append(e.Steps, Step{Rule: r.name, Range: r.rng, Why: fmt.Sprintf(
					"rule %q: has no when.listener, so it applies to TLS listeners only; %q is a plain listener", r.name, listenerName(in))})
				continue
			}
			failed := -1
			for i := range r.conds {
				if !r.conds[i].match(in, plain) {
					failed = i
					break
				}
			}
			if failed >= 0 {
				why := r.conds[failed].whyNot(in)
				if plain && r.conds[failed].kind.clientKind() {
					why = fmt.Sprintf("%s never matches on plain listener %q (no client certificate)", r.conds[failed].kind, listenerName(in))
				}
				e.Steps = append(e.Steps, Step{Rule: r.name, Range: r.rng, Why: fmt.Sprintf("rule %q: %s", r.name, why)})
				continue
			}
			e.Steps = append(e.Steps, Step{Rule: r.name, Range: r.rng, Matched: true, Why: r.whyMatched(in)})
			e.Decision = r.decision
			return e
		}
	}
	e.Decision = noMatch
	return e
}

func (r *rule) whyMatched(in *Input) string {
	if len(r.conds) == 0 {
		return fmt.Sprintf("rule %q: matches every association (no when conditions)", r.name)
	}
	parts := make([]string, len(r.conds))
	for i := range r.conds {
		parts[i] = r.conds[i].kind.String() + " " + r.conds[i].inputText(in)
	}
	return fmt.Sprintf("rule %q: matches (%s)", r.name, strings.Join(parts, ", "))
}

// inputText is the input value a condition looked at, quoted.
func (c *cond) inputText(in *Input) string {
	switch c.kind {
	case condListener:
		return strconv.Quote(listenerName(in))
	case condCN:
		return strconv.Quote(in.CN)
	case condDNS:
		return quoteList(in.DNS, "(none in the certificate)")
	case condURI:
		return quoteList(in.URI, "(none in the certificate)")
	case condEmail:
		return quoteList(in.Email, "(none in the certificate)")
	case condFingerprint:
		return strconv.Quote(in.Fingerprint)
	case condSourceCIDR:
		if !in.SourceIP.IsValid() {
			return "(unknown)"
		}
		return in.SourceIP.Unmap().String()
	case condCallingAE:
		return strconv.Quote(trimAE(in.CallingAE))
	case condCalledAE:
		return strconv.Quote(trimAE(in.CalledAE))
	}
	return ""
}

func (c *cond) whyNot(in *Input) string {
	if c.kind == condSourceCIDR {
		ps := make([]string, len(c.prefixes))
		for i, p := range c.prefixes {
			ps[i] = p.String()
		}
		return fmt.Sprintf("source address %s is not in source_cidr %s", c.inputText(in), quoteList(ps, "[]"))
	}
	pats := make([]string, len(c.pats))
	for i := range c.pats {
		pats[i] = c.pats[i].text
	}
	return fmt.Sprintf("%s %s does not match %s", c.kind, c.inputText(in), quoteList(pats, "[]"))
}

func quoteList(items []string, empty string) string {
	if len(items) == 0 {
		return empty
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(s))
	}
	b.WriteByte(']')
	return b.String()
}
