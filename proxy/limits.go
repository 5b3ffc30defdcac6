package proxy

import (
	"net/netip"

	"github.com/dicomedge/dicomedge/policy"
)

// Admission: what a connection may hold before and after its association
// is decided (docs/limits.md). Before: a pre-association slot, taken at
// accept from a budget of its own (policy.Admission.PreAssociation), then
// one of its source's share (PerSource), counted once the source is known
// (after the PROXY header, read under its own short deadline). After: an
// association slot (max_associations) and one of the client's
// (max_associations_per_client). An unauthenticated flood therefore fills
// only the pre-association budget, and one source only its share of it;
// one authenticated client only its share of the associations.

// tryAcquire takes an association slot unless max_associations are in use.
func (s *Server) tryAcquire(limit int) bool {
	for {
		n := s.active.Load()
		if limit > 0 && n >= int64(limit) {
			return false
		}
		if s.active.CompareAndSwap(n, n+1) {
			s.Metrics.Active.Set(float64(n + 1))
			return true
		}
	}
}

func (s *Server) release() {
	n := s.active.Add(-1)
	s.Metrics.Active.Set(float64(n))
}

// tryAcquirePre takes a pre-association slot unless all are in use.
func (s *Server) tryAcquirePre(a policy.Admission) bool {
	return acquireBelow(&s.preActive, int64(a.PreAssociation))
}

// acquireAwaitingHeader takes one of the slots of connections waiting
// for a trusted balancer's PROXY header, whose source is not yet known.
func (s *Server) acquireAwaitingHeader(a policy.Admission) bool {
	return acquireBelow(&s.awaitHeader, int64(a.AwaitingProxyHeader))
}

func (s *Server) releaseAwaitingHeader() { s.awaitHeader.Add(-1) }

// acquireBelow increments n unless it has reached limit.
func acquireBelow(n interface {
	Load() int64
	CompareAndSwap(old, new int64) bool
}, limit int64) bool {
	for {
		v := n.Load()
		if v >= limit {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// acquirePreSource takes one of key's pre-association slots.
func (s *Server) acquirePreSource(key netip.Prefix, a policy.Admission) bool {
	s.preMu.Lock()
	defer s.preMu.Unlock()
	if s.preSource == nil {
		s.preSource = map[netip.Prefix]int{}
	}
	if s.preSource[key] >= a.PerSource {
		return false
	}
	s.preSource[key]++ // entries ≤ pre-association slots: the map is bounded
	return true
}

func (s *Server) releasePreSource(key netip.Prefix) {
	s.preMu.Lock()
	defer s.preMu.Unlock()
	if s.preSource[key]--; s.preSource[key] <= 0 {
		delete(s.preSource, key)
	}
}

// clientKey names the client whose associations are counted together: its
// certificate's fingerprint, or on a plain listener (no certificate) its
// source address.
func clientKey(fingerprint string, source netip.Addr) string {
	if fingerprint != "" {
		return fingerprint
	}
	return "addr:" + source.String()
}

// acquireClient takes one of the client's association slots unless it
// holds limit of them.
func (s *Server) acquireClient(key string, limit int) bool {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.clientActive == nil {
		s.clientActive = map[string]int{}
	}
	if s.clientActive[key] >= limit {
		return false
	}
	s.clientActive[key]++ // entries ≤ associations: the map is bounded
	return true
}

func (s *Server) releaseClient(key string) {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.clientActive[key]--; s.clientActive[key] <= 0 {
		delete(s.clientActive, key)
	}
}
