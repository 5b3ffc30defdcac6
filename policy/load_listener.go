package policy

import (
	"fmt"
	"net"

	"github.com/hashicorp/hcl/v2"
)

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
