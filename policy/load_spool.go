package policy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Spool defaults, as docs/policy.md lists them.
const (
	DefaultSpoolDir     = "var/spool"
	DefaultSpoolMaxSize = 10 << 30
	DefaultSpoolMaxAge  = 72 * time.Hour
)

// sizeUnits are the suffixes max_size accepts: IEC binary and SI decimal.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseSize reads "50GiB", "500MB", "4096" (bytes).
func ParseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, false
	}
	return n * mult, true
}

func (l *loader) spool(s *spoolSchema, sp *Spool) {
	if s == nil {
		s = &spoolSchema{}
	}
	sp.Dir = l.filePath(s.Dir, "spool.dir", DefaultSpoolDir)
	sp.MaxSize = DefaultSpoolMaxSize
	if v, ok := l.str(s.MaxSize, ""); ok {
		if n, ok := ParseSize(v.s); ok {
			sp.MaxSize = n
		} else {
			l.errorf(v.rng, "Invalid size", "spool.max_size = %q is not a size: write a number and a unit, like \"50GiB\" or \"500MB\".", v.s)
		}
	}
	sp.MaxAge = l.duration(s.MaxAge, "spool.max_age", DefaultSpoolMaxAge, false)
}

// dicomweb decodes a backend's dicomweb block.
func (l *loader) dicomweb(name string, s *dicomwebSchema) *DICOMweb {
	what := fmt.Sprintf("backend %q dicomweb", name)
	d := &DICOMweb{
		CA:        l.paths(s.CA, what+".ca"),
		CertFile:  l.filePath(s.CertFile, what+".cert_file", ""),
		KeyFile:   l.filePath(s.KeyFile, what+".key_file", ""),
		TokenFile: l.filePath(s.TokenFile, what+".token_file", ""),
	}
	if v, ok := l.str(s.URL, ""); ok {
		if l.httpsURL(v, what+".url") {
			d.URL = strings.TrimRight(v.s, "/")
		}
	} else if s.URL == nil {
		l.errorf(s.DefRange, "Missing url", "%s needs url, the service's DICOMweb base URL (STOW-RS posts to url + \"/studies\").", what)
	}
	switch {
	case s.CertFile != nil && s.KeyFile == nil:
		l.errorf(s.CertFile.Range, "Missing key_file", "%s.cert_file needs key_file, the file with its private key.", what)
	case s.KeyFile != nil && s.CertFile == nil:
		l.errorf(s.KeyFile.Range, "Missing cert_file", "%s.key_file needs cert_file, the certificate it belongs to.", what)
	}
	if o := first(l, s.OAuth2, "oauth2"); o != nil {
		if s.TokenFile != nil {
			l.errorf(o.DefRange, "Two credentials", "%s has both token_file and oauth2; give one of them (token_file at %s).", what, at(s.TokenFile.Range))
		}
		oa := &OAuth2{ClientSecretFile: l.filePath(o.ClientSecretFile, what+".oauth2.client_secret_file", "")}
		if v, ok := l.str(o.TokenURL, ""); ok {
			if l.httpsURL(v, what+".oauth2.token_url") {
				oa.TokenURL = v.s
			}
		} else if o.TokenURL == nil {
			l.errorf(o.DefRange, "Missing token_url", "%s.oauth2 needs token_url, the authorization server's token endpoint.", what)
		}
		if v, ok := l.str(o.ClientID, ""); ok && strings.TrimSpace(v.s) != "" {
			oa.ClientID = v.s
		} else if o.ClientID == nil || ok {
			rng := o.DefRange
			if o.ClientID != nil {
				rng = o.ClientID.Expr.Range()
			}
			l.errorf(rng, "Missing client_id", "%s.oauth2 needs client_id.", what)
		}
		if o.ClientSecretFile == nil {
			l.errorf(o.DefRange, "Missing client_secret_file", "%s.oauth2 needs client_secret_file, a file holding the client secret (kept out of the policy).", what)
		}
		for _, v := range l.strList(o.Scopes) {
			oa.Scopes = append(oa.Scopes, v.s)
		}
		d.OAuth2 = oa
	}
	return d
}

// httpsURL checks that v is an absolute https URL without credentials: a
// bearer token or client secret must never cross in clear text, and
// credentials belong in token_file or oauth2, not in the policy.
func (l *loader) httpsURL(v val, what string) bool {
	u, err := url.Parse(v.s)
	switch {
	case err != nil || u.Host == "":
		l.errorf(v.rng, "Invalid URL", "%s = %q is not an absolute URL, like \"https://dicom.example.org/dicomweb\".", what, v.s)
	case u.Scheme != "https":
		l.errorf(v.rng, "Invalid URL", "%s = %q: only https is allowed; instances and credentials never cross in clear text.", what, v.s)
	case u.User != nil:
		l.errorf(v.rng, "Invalid URL", "%s = %q carries credentials; use token_file or oauth2 instead.", what, v.s)
	case u.RawQuery != "" || u.Fragment != "":
		l.errorf(v.rng, "Invalid URL", "%s = %q: a base URL has no query or fragment.", what, v.s)
	default:
		return true
	}
	return false
}

// storeAndForward checks a store-and-forward relay: only C-ECHO and
// C-STORE (the edge answers them itself), no move destinations. Without a
// services attribute the rule allows exactly those two.
func (l *loader) storeAndForward(name string, s *relaySchema, r *rule, sfRng hcl.Range, why string) {
	r.decision.StoreAndForward = true
	if s.Services == nil {
		r.services = svcCEcho | svcCStore
		r.decision.Services = []string{"C-ECHO", "C-STORE"}
	} else {
		for _, v := range l.strList(s.Services) {
			if bit := serviceBit(v.s); bit != 0 && bit != svcCEcho && bit != svcCStore {
				l.errorf(v.rng, "Service not allowed with store-and-forward", "rule %q is store-and-forward (%s at %s): the edge answers C-ECHO and C-STORE itself and can do nothing else; remove %q.", name, why, at(sfRng), v.s)
			}
		}
	}
	if s.MoveDestinations != nil {
		l.errorf(s.MoveDestinations.Expr.Range(), "Move destinations with store-and-forward", "rule %q is store-and-forward (%s): it carries no C-MOVE, so move_destinations has no meaning here.", name, why)
	}
}

// StoreAndForwardBackends names the backends that store-and-forward rules
// relay to, in rule order, each once: the backends a forwarder serves.
func (p *Policy) StoreAndForwardBackends() []string {
	if p == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, r := range p.rules {
		if b := r.decision.Backend; r.decision.StoreAndForward && b != nil && !seen[b.Name] {
			seen[b.Name] = true
			out = append(out, b.Name)
		}
	}
	return out
}
