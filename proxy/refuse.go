package proxy

// TEMPORARY stand-in with the shape of the connection.refused helper being
// landed separately; replaced by it on merge.

import (
	"net"
	"net/netip"

	"github.com/dicomedge/dicomedge/audit"
)

const RefusedSourceNotAllowed = "source-not-allowed"

type refusal struct {
	Conn     string
	Remote   netip.AddrPort
	Listener string
	Reason   string
	Detail   string
}

func (s *Server) refuse(nc net.Conn, r refusal) {
	nc.Close()
	s.auditEvent(audit.Event{Event: "connection.refused", Conn: r.Conn, Remote: r.Remote.String(), Listener: r.Listener, Reason: r.Reason})
}
