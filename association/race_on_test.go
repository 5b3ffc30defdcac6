//go:build race

package association

// raceEnabled: under the race detector sync.Pool drops entries on purpose,
// so allocation counts that depend on pooling are not checked.
const raceEnabled = true
