package policy

import (
	"net/netip"
	"strings"
)

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
