package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
)

// TSIGAlgorithms are the key_alg values tls.acme.dns.rfc2136 accepts: the
// HMAC algorithms of RFC 8945 section 6 that BIND, PowerDNS, Knot and Windows
// DNS share, strongest first. HMAC-MD5 is refused: RFC 8945 lets it be used
// only for compatibility with old servers.
var TSIGAlgorithms = []string{"hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"}

const (
	// DefaultTSIGAlgorithm is key_alg when neither the policy nor the key
	// file names one (tsig-keygen's default too).
	DefaultTSIGAlgorithm = "hmac-sha256"
	// MinTSIGSecret is the shortest TSIG secret accepted, in bytes: a guessable
	// key lets anyone who reaches the server change the zone.
	MinTSIGSecret = 16
	// maxKeyFile bounds what is read from key_secret_file.
	maxKeyFile = 64 << 10
)

// acmeDNS decodes tls.acme.dns. Exactly one provider block (today only
// rfc2136) must be inside.
func (l *loader) acmeDNS(s *acmeDNSSchema) *ACMEDNS {
	r := first(l, s.RFC2136, "rfc2136")
	if r == nil {
		l.errorf(s.DefRange, "Missing DNS provider", "tls.acme.dns needs a provider block that writes the challenge's TXT record: rfc2136 { server, key_name, key_alg, key_secret_file, zone } (RFC 2136 dynamic update with a TSIG key).")
		return nil
	}
	return &ACMEDNS{RFC2136: l.rfc2136(r)}
}

func (l *loader) rfc2136(s *rfc2136Schema) *RFC2136 {
	const what = "tls.acme.dns.rfc2136"
	r := &RFC2136{}
	missing := func(attr, why string) {
		l.errorf(s.DefRange, "Missing "+attr, "%s.%s is required: %s", what, attr, why)
	}
	if v, ok := l.str(s.Server, ""); !ok {
		if s.Server == nil {
			missing("server", "the address of the primary DNS server that accepts dynamic updates for the zone, like \"10.0.0.53:53\".")
		}
	} else {
		if _, _, err := net.SplitHostPort(v.s); err != nil && !strings.Contains(v.s, ":") {
			v.s = net.JoinHostPort(v.s, "53") // a host alone: the DNS port
		}
		if l.hostPort(v, what+".server", false) {
			if host, _, _ := net.SplitHostPort(v.s); host == "" {
				l.errorf(v.rng, "Invalid address", "%s.server = %q names no host: give the DNS server's address, like \"10.0.0.53:53\".", what, v.s)
			}
			r.Server = v.s
		}
	}
	if v, ok := l.str(s.KeyName, ""); !ok {
		if s.KeyName == nil {
			missing("key_name", "the name of the TSIG key the server allows to update the zone, as in its key statement (\"dicomedge-acme.\").")
		}
	} else if name, ok := fqdn(v.s); ok {
		r.KeyName = name
	} else {
		l.errorf(v.rng, "Invalid key name", "%s.key_name: %q is not a DNS name; a TSIG key is named like a domain, e.g. \"dicomedge-acme.\".", what, v.s)
	}
	alg, algGiven := l.str(s.KeyAlg, "")
	if algGiven {
		alg.s = strings.TrimSuffix(strings.ToLower(alg.s), ".")
		if strings.HasPrefix(alg.s, "hmac-md5") {
			l.errorf(alg.rng, "Weak TSIG algorithm", "%s.key_alg: HMAC-MD5 is not accepted (RFC 8945 section 6 keeps it only for old servers); make a new key with tsig-keygen -a hmac-sha256.", what)
			algGiven = false
		} else if !l.enum(alg, "TSIG algorithm", TSIGAlgorithms) {
			algGiven = false
		}
	}
	r.KeyAlg = alg.s
	if v, ok := l.str(s.KeySecretFile, ""); !ok {
		if s.KeySecretFile == nil {
			missing("key_secret_file", "the file that holds the TSIG key's secret (tsig-keygen's output, or the base64 secret alone).")
		}
	} else if strings.TrimSpace(v.s) == "" {
		l.errorf(v.rng, "Empty file name", "%s.key_secret_file must name a file.", what)
	} else {
		r.KeySecretFile = l.path(v)
		key, err := readTSIGKeyFile(r.KeySecretFile)
		switch {
		case err != nil:
			l.errorf(v.rng, "Unusable TSIG key file", "%s.key_secret_file %q: %s.", what, v.s, err)
		default:
			if key.Name != "" && r.KeyName != "" && key.Name != r.KeyName {
				l.errorf(v.rng, "TSIG key name differs", "%s.key_secret_file %q holds the key %q, but key_name is %q; the server checks both.", what, v.s, key.Name, r.KeyName)
			}
			if key.Algorithm != "" {
				switch {
				case algGiven && key.Algorithm != r.KeyAlg:
					l.errorf(alg.rng, "TSIG algorithm differs", "%s.key_alg is %q, but the key in %q is %q.", what, r.KeyAlg, v.s, key.Algorithm)
				case s.KeyAlg == nil && strings.HasPrefix(key.Algorithm, "hmac-md5"):
					l.errorf(v.rng, "Weak TSIG algorithm", "%s.key_secret_file %q holds an HMAC-MD5 key, which is not accepted (RFC 8945 section 6 keeps it only for old servers); make a new key with tsig-keygen -a hmac-sha256.", what, v.s)
				case s.KeyAlg == nil && l.enum(val{s: key.Algorithm, rng: v.rng}, "TSIG algorithm", TSIGAlgorithms):
					r.KeyAlg = key.Algorithm // the key file says which
				}
			}
			r.KeySecret = Secret(key.Secret)
			if fi, err := os.Stat(r.KeySecretFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
				l.warnf(v.rng, "TSIG key readable by everyone", "%s.key_secret_file %q can be read by every user of this machine, and the key can change the zone: chmod o-r it.", what, v.s)
			}
		}
	}
	if r.KeyAlg == "" && s.KeyAlg == nil {
		r.KeyAlg = DefaultTSIGAlgorithm
	}
	if v, ok := l.str(s.Zone, ""); !ok {
		if s.Zone == nil {
			missing("zone", "the DNS zone the TXT records go into (the zone the key may update), like \"example.org.\".")
		}
	} else if z, ok := fqdn(v.s); ok && !strings.HasPrefix(z, "*") {
		r.Zone = z
	} else {
		l.errorf(v.rng, "Invalid zone", "%s.zone: %q is not a DNS zone name, like \"example.org.\".", what, v.s)
	}
	return r
}

// domainNeedsDNS checks one tls.acme.domains element against the dns block:
// a wildcard is issued only through DNS-01 (RFC 8555 section 7.1.3), and
// with rfc2136 every name's challenge record must fall inside the zone.
func (l *loader) domainNeedsDNS(v val, haveDNS bool, dns *ACMEDNS) {
	name := strings.ToLower(strings.TrimSuffix(v.s, "."))
	if strings.HasPrefix(name, "*.") && !haveDNS {
		l.errorf(v.rng, "Wildcard needs DNS-01", "tls.acme.domains: %q is a wildcard, which an ACME CA validates only by DNS-01 (RFC 8555 section 7.1.3, 8.4); add a dns { rfc2136 { ... } } block to tls.acme, or name the hosts one by one.", v.s)
	}
	if dns == nil || dns.RFC2136 == nil || dns.RFC2136.Zone == "" {
		return
	}
	zone := dns.RFC2136.Zone
	base := strings.TrimPrefix(name, "*.") + "."
	if base != zone && !strings.HasSuffix(base, "."+zone) {
		l.errorf(v.rng, "Domain outside the zone", "tls.acme.domains: %q is not in tls.acme.dns.rfc2136.zone %q, so its _acme-challenge TXT record cannot be written there.", v.s, zone)
	}
}

// fqdn lower-cases a DNS name and adds the final dot; ok is false when it is
// not a name.
func fqdn(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "." || !validDomain(strings.TrimSuffix(s, ".")) {
		return "", false
	}
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s, true
}

// TSIGKey is what a TSIG key file holds. Name and Algorithm are empty when
// the file holds only the secret.
type TSIGKey struct {
	Name      string // fully qualified, lower case
	Algorithm string // lower case, without a final dot
	Secret    string // base64, as RFC 8945 servers exchange it
}

func readTSIGKeyFile(path string) (TSIGKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return TSIGKey{}, errors.Unwrap(err) // the path is in the message already
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return TSIGKey{}, err
	}
	if len(b) > maxKeyFile {
		return TSIGKey{}, fmt.Errorf("larger than %d KiB: not a key file", maxKeyFile>>10)
	}
	return ParseTSIGKey(b)
}

var (
	keyClause = regexp.MustCompile(`(?s)\bkey\s+"?([^"\s{;]+)"?\s*\{(.*?)\}\s*;`)
	algStmt   = regexp.MustCompile(`\balgorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	secStmt   = regexp.MustCompile(`\bsecret\s+"([^"]*)"\s*;`)
)

// ParseTSIGKey reads a TSIG key in one of the two forms operators have at
// hand: BIND's key statement, as tsig-keygen and ddns-confgen print it
// (key "name" { algorithm hmac-sha256; secret "base64"; };), or the base64
// secret alone on one line. Errors never quote the file's content: it is a
// secret.
func ParseTSIGKey(b []byte) (TSIGKey, error) {
	var k TSIGKey
	text := string(bytes.TrimSpace(b))
	if clauses := keyClause.FindAllStringSubmatch(text, -1); len(clauses) > 0 {
		if len(clauses) > 1 {
			return k, fmt.Errorf("holds %d key statements; give a file with the one key the edge uses", len(clauses))
		}
		name, ok := fqdn(clauses[0][1])
		if !ok {
			return k, errors.New("its key statement's name is not a DNS name")
		}
		k.Name = name
		if m := algStmt.FindStringSubmatch(clauses[0][2]); m != nil {
			k.Algorithm = strings.TrimSuffix(strings.ToLower(m[1]), ".")
		}
		m := secStmt.FindStringSubmatch(clauses[0][2])
		if m == nil {
			return k, errors.New("its key statement has no secret \"...\"; line")
		}
		text = strings.TrimSpace(m[1])
	} else if strings.ContainsAny(text, "{};\"") || strings.Contains(text, "\n") {
		return k, errors.New("is neither a key statement (key \"name\" { algorithm ...; secret \"...\"; };) nor a base64 secret on one line")
	}
	if text == "" {
		return k, errors.New("holds no secret")
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return k, errors.New("the secret is not base64")
	}
	if len(raw) < MinTSIGSecret {
		return k, fmt.Errorf("the secret is %d bytes; at least %d are needed (tsig-keygen makes 32)", len(raw), MinTSIGSecret)
	}
	k.Secret = text
	return k, nil
}
