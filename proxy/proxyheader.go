package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// upstreamAddr is the address of the TCP peer itself (a load balancer's,
// when one is in front), read without waiting for a PROXY header.
func upstreamAddr(nc net.Conn) netip.AddrPort {
	if pc, ok := nc.(*proxyproto.Conn); ok {
		nc = pc.Raw()
	}
	return addrPort(nc.RemoteAddr())
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// errNoBytes is a connection closed before it sent anything: a load
// balancer's or monitor's TCP check, not a refused client.
var errNoBytes = errors.New("closed before any byte")

// errNoIPSource is a header that relays a client (PROXY command) without
// an IP source address, e.g. v2 AF_UNIX: nothing could stand for the
// client in allow_cidr, source_cidr, the per-source limits or the audit
// trail, so the connection is refused rather than served as nobody.
var errNoIPSource = errors.New("its source is not an IP address")

// clientAddr returns the client's address: the PROXY header's source when
// nc comes from a trusted load balancer, which must send the header within
// timeout (policy.ProxyHeaderTimeout: a balancer sends it with the
// connection, so a connection that sends none holds its pre-association
// slot only that long) and before deadline; else the TCP peer's. From an
// address that may not send a header, nothing is read here: a header it
// sends fails the TLS handshake (proxyHeaderRefused). The read deadline is
// left at deadline.
func clientAddr(nc net.Conn, timeout time.Duration, deadline time.Time) (netip.AddrPort, error) {
	if !awaitsProxyHeader(nc) {
		return upstreamAddr(nc), nil
	}
	pc := nc.(*proxyproto.Conn)
	_ = nc.SetReadDeadline(minTime(time.Now().Add(timeout), deadline))
	pc.ProxyHeader()       // reads the header
	_, err := pc.Read(nil) // the header's error, if any; reads nothing more
	if errors.Is(err, proxyproto.ErrNoProxyProtocol) && closedByPeer(pc.Raw()) {
		// The stream ended without a header: a TCP check, or a client
		// gone already; nothing a record would help with.
		err = errNoBytes
	}
	_ = nc.SetReadDeadline(deadline)
	if err != nil {
		return upstreamAddr(nc), err
	}
	// LOCAL (v2) or UNKNOWN (v1) is the balancer's own connection: the
	// library then reports the TCP peer, as the specification says.
	ap := addrPort(pc.RemoteAddr())
	if !ap.IsValid() {
		return upstreamAddr(nc), errNoIPSource
	}
	return ap, nil
}

// awaitsProxyHeader reports whether nc comes from a trusted load balancer
// and so must start with a PROXY header.
func awaitsProxyHeader(nc net.Conn) bool {
	pc, ok := nc.(*proxyproto.Conn)
	return ok && pc.ProxyHeaderPolicy == proxyproto.REQUIRE
}

// closedByPeer reports whether nc's peer has closed its side: a read that
// returns at once with end of stream.
func closedByPeer(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	var b [1]byte
	_, err := nc.Read(b[:])
	return errors.Is(err, io.EOF)
}

// proxyHeaderRefused reports whether a failed handshake (or A-ASSOCIATE-RQ
// read, on a plain listener) was a PROXY header from an address that may
// not send one: a well-formed one (ErrSuperfluousProxyHeader) or one the
// library could not parse, which would otherwise reach the TLS layer's
// classification as "other" or even "protocol-version". The library's
// errors all start with its name, and one of them (a v1 header it could
// not read) is formatted rather than wrapped, so the chain's messages are
// matched rather than a list of sentinels.
func proxyHeaderRefused(err error) bool {
	if err == nil {
		return false
	}
	if strings.HasPrefix(err.Error(), "proxyproto: ") {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return proxyHeaderRefused(u.Unwrap())
	case interface{ Unwrap() []error }:
		return slices.ContainsFunc(u.Unwrap(), proxyHeaderRefused)
	}
	return false
}

// untrustedHeaderDetail is the refusal's detail for proxyHeaderRefused
// errors: a malformed header says what was wrong with it.
func untrustedHeaderDetail(err error) string {
	const d = "PROXY header from an address not in proxy_protocol"
	if errors.Is(err, proxyproto.ErrSuperfluousProxyHeader) {
		return d
	}
	return d + " (malformed: " + err.Error() + ")"
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
