//go:build race

package main

// raceEnabled: the race detector slows the test's own TLS clients several
// times; load loops run fewer rounds under it.
const raceEnabled = true
