package proxy

import (
	"net"
	"net/netip"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// Reasons of a connection.refused record (docs/refusals.md).
const (
	// RefusedSourceNotAllowed: a plain listener's client outside its allow_cidr.
	RefusedSourceNotAllowed = "source-not-allowed"
	// RefusedProxyHeader: a PROXY header missing from a trusted load
	// balancer (or not sent within proxyHeaderTimeout), malformed, or sent
	// by an address that may not send one.
	RefusedProxyHeader = "proxy-header"
	// RefusedTooManyConnections: the pre-association budget, or the
	// source's share of it, is in use.
	RefusedTooManyConnections = "too-many-connections"
)

// RefusedReasons are every reason a connection.refused record may carry.
var RefusedReasons = []string{RefusedSourceNotAllowed, RefusedProxyHeader, RefusedTooManyConnections}

// EdgeListener is the name of the edge block's own (TLS) listener.
const EdgeListener = policy.EdgeListener

// refusal describes a connection the edge will not serve.
type refusal struct {
	Conn     string         // the connection id, when one was given
	Remote   netip.AddrPort // the client's address as known (the PROXY header's where trusted)
	Listener string         // the listener's name
	Reason   string         // one of RefusedReasons
	Detail   string         // optional: what was exceeded or wrong
}

// refuse closes nc at once, without an answer, and records why: always in
// dicomedge_connections_refused_total{reason}, in the operational log at
// most once a second, and as a connection.refused audit record limited per
// source like tls.failed, so a flood of refused connections cannot flood
// the trail (what is held back is summarised, see tlsfail.go).
func (s *Server) refuse(nc net.Conn, r refusal) {
	// Counted before the close, so a client that has seen its refusal
	// finds it counted in /metrics.
	s.Metrics.ConnectionsRefused.WithLabelValues(r.Reason).Inc()
	nc.Close()
	remote := ""
	if r.Remote.IsValid() {
		remote = r.Remote.String()
	}
	n := s.preRefusedN.Add(1)
	now := time.Now().UnixNano()
	if last := s.preRefusedLog.Load(); now-last >= int64(time.Second) && s.preRefusedLog.CompareAndSwap(last, now) {
		s.log.Warn("connection refused", "reason", r.Reason, "remote", remote, "listener", r.Listener,
			"detail", r.Detail, "refused_total", n)
	}
	if !s.refused.allow(r.Remote.Addr(), r.Reason) {
		return
	}
	s.auditEvent(audit.Event{Event: audit.EventConnectionRefused, Conn: r.Conn, Remote: remote,
		Listener: r.Listener, Reason: r.Reason, Detail: r.Detail})
}
