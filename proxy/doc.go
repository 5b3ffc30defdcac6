// Package proxy is the running edge: listener lifecycle, per-connection
// goroutines, limits and timeouts, the answer and relay paths, backend
// dialing, graceful drain and reload. It uses association for every PDU.
package proxy
