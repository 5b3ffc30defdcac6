//go:build race

package proxy

// raceEnabled: the race detector makes a TLS handshake several times
// slower; load loops run fewer rounds under it.
const raceEnabled = true
