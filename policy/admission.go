package policy

import "time"

// DefaultMaxAssociationsPerClient is edge.max_associations_per_client when
// it is not set: a quarter of max_associations, at least 4, so that one
// client (one certificate, or one address on a plain listener) cannot hold
// every association while others are turned away.
func DefaultMaxAssociationsPerClient(maxAssociations int) int {
	return max(maxAssociations/4, 4)
}

// The admission limits for connections that have not associated yet
// (docs/limits.md). They are derived from max_associations and
// artim_timeout rather than configured: what they protect is the share of
// clients that complete their handshake, whatever the edge's size.
const (
	// ProxyHeaderTimeout bounds the wait for a trusted load balancer's
	// PROXY header; a balancer sends it with the connection.
	ProxyHeaderTimeout = 3 * time.Second
	// HandshakeTimeout bounds the TLS handshake; ARTIM still bounds the
	// handshake and the A-ASSOCIATE-RQ together. A handshake is a few
	// round trips: 10 s allows slow links and busy hosts.
	HandshakeTimeout = 10 * time.Second
	// minPreAssociation is the smallest pre-association budget.
	minPreAssociation = 64
	// minPerSource is the smallest per-source share of that budget: a
	// modality or a NAT may open a few associations at once.
	minPerSource = 8
)

// Admission are the limits that apply to a connection before its
// association is decided.
type Admission struct {
	// PreAssociation is how many connections may be in the PROXY header,
	// the TLS handshake or before their A-ASSOCIATE-RQ's decision at once,
	// all sources together: twice max_associations, at least 64. It is a
	// budget of its own: established associations do not use it.
	PreAssociation int
	// PerSource is how many of them one source (an IPv4 address, an IPv6
	// /64; the PROXY header's where trusted) may hold: 1/16 of the budget,
	// at least 8.
	PerSource int
	// AwaitingProxyHeader is how many may wait for a trusted balancer's
	// PROXY header (their source is not known yet): half the budget, so
	// that connections whose source is known always have the other half.
	AwaitingProxyHeader int
	// ProxyHeader and Handshake bound those steps (never beyond ARTIM).
	ProxyHeader, Handshake time.Duration
}

// Admission returns the pre-association limits for this edge block.
func (e *Edge) Admission() Admission {
	maxA := e.MaxAssociations
	if maxA <= 0 {
		maxA = DefaultMaxAssociations
	}
	artim := e.ARTIM()
	pre := max(2*maxA, minPreAssociation)
	return Admission{
		PreAssociation:      pre,
		PerSource:           max(pre/16, minPerSource),
		AwaitingProxyHeader: pre / 2,
		ProxyHeader:         min(ProxyHeaderTimeout, artim),
		Handshake:           min(HandshakeTimeout, artim),
	}
}

// PerClient is max_associations_per_client, or its default.
func (e *Edge) PerClient() int {
	if e.MaxAssociationsPerClient > 0 {
		return e.MaxAssociationsPerClient
	}
	return DefaultMaxAssociationsPerClient(e.MaxAssociations)
}
