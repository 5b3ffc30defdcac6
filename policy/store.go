package policy

import (
	"sync/atomic"

	"github.com/hashicorp/hcl/v2"
)

// Store holds the configuration in force and replaces it atomically on
// reload. An association keeps the Decision it got: a Decision refers to the
// compiled rules of the Config it came from, which stay valid after a swap.
type Store struct {
	cur atomic.Pointer[Config]
}

// NewStore returns a Store holding cfg, which must have loaded without errors.
func NewStore(cfg *Config) *Store {
	s := &Store{}
	s.cur.Store(cfg)
	return s
}

// Config returns the configuration in force.
func (s *Store) Config() *Config { return s.cur.Load() }

// Reload loads path completely (parse, validate, compile) and only then
// swaps it in. With errors the old configuration stays in force and the
// returned Config is the old one; the diagnostics (and the new file's
// sources, in the second Config's Files) say why. Warnings do not stop a
// reload.
func (s *Store) Reload(path string) (inForce *Config, attempted *Config, diags hcl.Diagnostics) {
	next, diags := LoadFile(path)
	if diags.HasErrors() {
		return s.cur.Load(), next, diags
	}
	s.cur.Store(next)
	return next, next, diags
}
