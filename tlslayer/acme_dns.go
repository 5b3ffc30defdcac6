package tlslayer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// rfc2136Zone is the libdns provider certmagic's DNS-01 solver writes the
// challenge's TXT record through. It pins every update to the configured
// zone (the one the TSIG key may change), whatever zone certmagic's SOA
// lookup found, and takes its settings from an atomic pointer so that a
// reload can rotate the TSIG key without a restart.
type rfc2136Zone struct {
	cfg atomic.Pointer[DNSConfig]
}

func newRFC2136Zone(c DNSConfig) *rfc2136Zone {
	z := &rfc2136Zone{}
	z.cfg.Store(&c)
	return z
}

func (z *rfc2136Zone) provider() (*rfc2136.Provider, string) {
	c := z.cfg.Load()
	return &rfc2136.Provider{Server: c.Server, KeyName: c.KeyName, KeyAlg: c.KeyAlg, Key: c.KeySecret}, c.Zone
}

// AppendRecords adds the records (relative to zone, certmagic's) to the
// configured zone and returns them relative to zone again, as certmagic
// remembers them for its propagation check and clean-up.
func (z *rfc2136Zone) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p, pinned := z.provider()
	in, err := rezone(recs, zone, pinned)
	if err != nil {
		return nil, err
	}
	out, err := p.AppendRecords(ctx, pinned, in)
	if err != nil {
		return nil, updateError(pinned, p, err)
	}
	return rezone(out, pinned, zone)
}

// updateError says what an operator checks for the usual refusals.
func updateError(zone string, p *rfc2136.Provider, err error) error {
	hint := ""
	switch msg := err.Error(); {
	case errors.Is(err, dns.ErrAuth), errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrKeyAlg):
		// The server's answer failed TSIG verification: a wrong secret or
		// algorithm, or an unsigned refusal (a zone it is not primary for).
		hint = fmt.Sprintf(" (the server refused the update: check that it is the primary for %s, that its key %s has this key_alg and secret, and that its update-policy lets the key write TXT records there)", zone, p.KeyName)
	case errors.Is(err, dns.ErrTime):
		hint = " (TSIG time check failed: the clocks of the edge and the DNS server differ by more than 5 minutes)"
	case strings.Contains(msg, `"REFUSED"`), strings.Contains(msg, `"NOTAUTH"`):
		hint = fmt.Sprintf(" (the server does not let key %s update TXT records in %s: see its update-policy or allow-update)", p.KeyName, zone)
	case strings.Contains(msg, `"NOTZONE"`):
		hint = fmt.Sprintf(" (the name is not in zone %s on that server)", zone)
	}
	return fmt.Errorf("RFC 2136 update of zone %s at %s: %w%s", zone, p.Server, err, hint)
}

func (z *rfc2136Zone) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p, pinned := z.provider()
	in, err := rezone(recs, zone, pinned)
	if err != nil {
		return nil, err
	}
	out, err := p.DeleteRecords(ctx, pinned, in)
	if err != nil {
		return nil, updateError(pinned, p, err)
	}
	return rezone(out, pinned, zone)
}

// rezone makes records named relative to from relative to to. A name
// outside to is an error: the key may not write there.
func rezone(recs []libdns.Record, from, to string) ([]libdns.Record, error) {
	from, to = dnsFqdn(from), dnsFqdn(to)
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		abs := strings.ToLower(libdns.AbsoluteName(rr.Name, from))
		if abs != to && !strings.HasSuffix(abs, "."+to) {
			return nil, fmt.Errorf("record %s is outside zone %s", abs, to)
		}
		rr.Name = libdns.RelativeName(abs, to)
		out = append(out, rr)
	}
	return out, nil
}

func dnsFqdn(s string) string {
	s = strings.ToLower(s)
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// dns01Solver builds certmagic's DNS-01 solver on the RFC 2136 provider. Its
// zone lookup and propagation check ask the configured resolvers, by default
// the primary server itself, never the system's resolvers or public ones: the
// edge may sit where only the hospital's DNS is reachable.
func dns01Solver(c DNSConfig, zone *rfc2136Zone, log *zap.Logger) (*certmagic.DNS01Solver, error) {
	if c.Server == "" || c.KeyName == "" || c.KeyAlg == "" || c.KeySecret == "" || c.Zone == "" {
		return nil, errors.New("dns: server, key_name, key_alg, key secret and zone are required")
	}
	resolvers := c.Resolvers
	if len(resolvers) == 0 {
		resolvers = []string{c.Server}
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        zone,
		Resolvers:          append([]string(nil), resolvers...),
		PropagationTimeout: c.PropagationTimeout,
		PropagationDelay:   c.PropagationDelay,
		Logger:             log,
	}}, nil
}
