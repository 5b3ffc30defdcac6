package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/policy"
)

// ownedListener is a listener block's socket that the Server opened.
type ownedListener struct {
	listen string // the configured address it was opened for
	ln     net.Listener
}

// StartListeners opens and serves every listener block of the
// configuration in force (the edge block's own listener "edge" is given to
// Serve). From then on a reload applies the listener blocks: a new one
// listens, a removed one stops accepting while its open associations drain,
// one whose listen address changed moves (the old socket is kept when the
// new address cannot be bound). It returns the first listen error, with
// nothing left open.
func (s *Server) StartListeners() error {
	s.init()
	cfg := s.current()
	if cfg == nil {
		return errors.New("proxy: no configuration")
	}
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.manage = true
	for _, l := range cfg.Listeners {
		if l.Name == policy.EdgeListener || s.owned[l.Name] != nil {
			continue
		}
		if err := s.openListener(l); err != nil {
			for name, o := range s.owned {
				o.ln.Close()
				delete(s.owned, name)
			}
			return err
		}
	}
	return nil
}

// openListener binds l and serves it; s.lnMu is held.
func (s *Server) openListener(l *policy.Listener) error {
	ln, err := net.Listen("tcp", l.Listen)
	if err != nil {
		return fmt.Errorf("listener %q: listen %s: %w", l.Name, l.Listen, err)
	}
	s.owned[l.Name] = &ownedListener{listen: l.Listen, ln: ln}
	go func() {
		err := s.ServeListener(l.Name, ln)
		if err != nil && !errors.Is(err, ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "listener", l.Name, "error", err)
		}
	}()
	return nil
}

// syncListeners applies cfg's listener blocks to the owned sockets after a
// reload and says what changed (or could not), for the log and the
// policy.reloaded record.
func (s *Server) syncListeners(cfg *policy.Config) []string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if !s.manage {
		return nil
	}
	var notes []string
	names := make([]string, 0, len(s.owned))
	for name := range s.owned {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		o := s.owned[name]
		l := cfg.Listener(name)
		switch {
		case l == nil || l.Name == policy.EdgeListener:
			o.ln.Close()
			delete(s.owned, name)
			notes = append(notes, fmt.Sprintf("listener %q removed: no longer accepting, open associations finish", name))
		case l.Listen != o.listen:
			ln, err := net.Listen("tcp", l.Listen)
			if err != nil {
				s.log.Warn("listener not moved: the new address cannot be bound; it keeps its old address",
					"listener", name, "old", o.listen, "new", l.Listen, "error", err)
				notes = append(notes, fmt.Sprintf("listener %q NOT moved to %s (%v): still on %s", name, l.Listen, err, o.listen))
				continue
			}
			o.ln.Close() // open associations on the old address finish
			s.owned[name] = &ownedListener{listen: l.Listen, ln: ln}
			go func() { _ = s.ServeListener(name, ln) }()
			notes = append(notes, fmt.Sprintf("listener %q moved from %s to %s", name, o.listen, l.Listen))
		}
	}
	for _, l := range cfg.Listeners {
		if l.Name == policy.EdgeListener || s.owned[l.Name] != nil {
			continue
		}
		if err := s.openListener(l); err != nil {
			s.log.Warn("new listener not started", "listener", l.Name, "error", err)
			notes = append(notes, fmt.Sprintf("listener %q NOT started: %v", l.Name, err))
			continue
		}
		notes = append(notes, fmt.Sprintf("listener %q added on %s", l.Name, l.Listen))
	}
	return notes
}

// ListenerAddr is the address the listener named name accepts on now, nil
// when it is not being served.
func (s *Server) ListenerAddr(name string) net.Addr {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln := s.byName[name]; ln != nil {
		return ln.Addr()
	}
	return nil
}

// proxyPolicy trusts a PROXY header only from the configured load
// balancers: from them it is required (so a client cannot bypass the
// balancer's address), from anyone else it is refused. With no balancer
// configured the connection is not wrapped at all.
func proxyPolicy(cidrs []netip.Prefix, o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	if len(cidrs) == 0 {
		return proxyproto.SKIP, nil
	}
	ap, err := netip.ParseAddrPort(o.Upstream.String())
	if err != nil {
		return proxyproto.REJECT, nil
	}
	// A link-local peer carries its interface's zone, which
	// Prefix.Contains never matches: dropped, as allow_cidr does.
	ip := ap.Addr().Unmap().WithZone("")
	for _, p := range cidrs {
		if p.Contains(ip) {
			return proxyproto.REQUIRE, nil
		}
	}
	return proxyproto.REJECT, nil
}
