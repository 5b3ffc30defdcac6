// Package proxy is the running edge: the Server's listener lifecycle (PROXY
// protocol, limits, ARTIM and idle timers, drain, reload), one conn per
// client (TLS handshake, A-ASSOCIATE-RQ, policy decision, reject), the
// answer path (the edge as Verification SCP) and the relay path (raw PDUs
// pumped both ways to a backend, DIMSE commands inspected and refused per
// rule, data sets never held), Prometheus metrics and the admin endpoints.
// Every PDU goes through package association; every event to package audit.
//
// Before a client has authenticated it costs the edge little: accept errors
// (EMFILE and the like) are retried with back-off rather than ending Serve;
// connections still in the TLS handshake or before their A-ASSOCIATE-RQ are
// capped at edge.max_associations (at least 16), a quarter of that (at
// least 4) per source (IPv4 address, IPv6 /64; the PROXY header's when
// trusted), further ones closed at once; and tls.failed audit records are limited per source (10 at once,
// then one per 6 s), the rest counted in one "suppressed" summary record per
// source and minute (dicomedge_tls_handshake_failures_total counts all).
package proxy
