package proxy

import (
	"sort"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// OpenAssociation is one established association, as the console's
// overview lists it. Strings are as the client sent them (AE titles
// trimmed): escape them before showing them.
type OpenAssociation struct {
	Conn      string // the conn id the audit records carry (conn, assoc)
	Listener  string
	Remote    string // ip:port (the PROXY header's source where trusted)
	Client    *audit.Client
	CallingAE string
	CalledAE  string
	Rule      string
	Action    string // "answer" | "relay"
	Backend   string
	BytesIn   int64 // from the client so far
	BytesOut  int64 // to the client so far
	Since     time.Time
}

// OpenAssociations returns the associations established now, oldest
// first. It only reads: each conn's identity and decision were set by its
// goroutine before the association became established, and the byte
// counters are atomic.
func (s *Server) OpenAssociations() []OpenAssociation {
	s.init()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]OpenAssociation, 0, len(conns))
	for _, c := range conns {
		if c.state.Load() != stateEstablished {
			continue
		}
		a := OpenAssociation{
			Conn: c.id, Listener: c.listener, Remote: c.remote, Client: c.client,
			Rule: c.rule, Action: c.ruleAction, Backend: c.ruleBackend,
			BytesIn: c.bytesIn(), Since: c.start,
		}
		if c.rq != nil {
			e := c.event("")
			a.CallingAE, a.CalledAE = e.CallingAE, e.CalledAE
		}
		if c.out != nil {
			a.BytesOut = c.out.bytes.Load()
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// Current is the configuration in force (Reload replaces it).
func (s *Server) Current() *policy.Config {
	s.init()
	return s.current()
}
