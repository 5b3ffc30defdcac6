// Package proxy is the running edge: the Server's listener lifecycle (PROXY
// protocol, limits, ARTIM and idle timers, drain, reload), one conn per
// client (TLS handshake, A-ASSOCIATE-RQ, policy decision, reject), the
// answer path (the edge as Verification SCP) and the relay path (raw PDUs
// pumped both ways to a backend, DIMSE commands inspected and refused per
// rule, data sets never held), Prometheus metrics and the admin endpoints.
// Every PDU goes through package association; every event to package audit.
package proxy
