package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/dicomedge/dicomedge/deid"
	"github.com/hashicorp/hcl/v2"
)

// Deidentify is a compiled deidentify block: the profile, key read.
type Deidentify struct {
	Name    string
	KeyFile string
	Profile *deid.Profile
}

// deidProfiles are the profile names a deidentify block's profile takes.
var deidProfiles = []string{"basic"}

var burnedInModes = []string{"refuse", "pass"}

func (l *loader) deidentifyBlocks(list []*deidSchema) map[string]*Deidentify {
	out := map[string]*Deidentify{}
	for _, s := range list {
		if prev, dup := out[s.Name]; dup && prev != nil {
			l.errorf(s.NameRange, "Duplicate deidentify block", "A deidentify block named %q is already defined.", s.Name)
			continue
		}
		out[s.Name] = l.deidentify(s)
	}
	return out
}

func (l *loader) deidentify(s *deidSchema) *Deidentify {
	what := fmt.Sprintf("deidentify %q", s.Name)
	if v, ok := l.str(s.Profile, "basic"); ok {
		l.enum(v, what+" profile", deidProfiles)
	}
	cfg := deid.Config{Name: s.Name, Replace: map[uint32]string{}}
	for _, v := range l.strList(s.Options) {
		if l.enum(v, what+" options", deid.OptionNames()) {
			cfg.Options = append(cfg.Options, v.s)
		}
	}
	if cfg.Options != nil && hasBoth(cfg.Options, "retain-full-dates", "retain-modified-dates") {
		l.errorf(s.Options.Expr.Range(), "Conflicting options", "%s: retain-full-dates and retain-modified-dates exclude each other; choose one.", what)
	}
	cfg.Keep = l.tags(s.Keep, what+" keep")
	cfg.Remove = l.tags(s.Remove, what+" remove")
	if s.Replace != nil {
		pairs, diags := hcl.ExprMap(s.Replace.Expr)
		if diags.HasErrors() {
			l.errorf(s.Replace.Expr.Range(), "Invalid replace", "%s replace must be a map of attribute to value, like { \"(0010,0010)\" = \"ANONYMOUS\" }.", what)
		}
		for _, kv := range pairs {
			var k, v string
			if !l.decodeExpr(kv.Key, &k) || !l.decodeExpr(kv.Value, &v) {
				continue
			}
			tag, err := deid.ParseTag(k)
			if err != nil {
				l.errorf(kv.Key.Range(), "Unknown attribute", "%s replace: %v.", what, err)
				continue
			}
			if len(v) > 64 || strings.ContainsAny(v, "\\\x00\r\n") {
				l.errorf(kv.Value.Range(), "Invalid replacement", "%s replace: %q must be one value of at most 64 characters, without backslash or control characters.", what, v)
				continue
			}
			cfg.Replace[tag] = v
		}
	}
	if v, ok := l.str(s.BurnedIn, "refuse"); ok && l.enum(v, what+" burned_in", burnedInModes) {
		cfg.PassBurnedIn = v.s == "pass"
	}
	d := &Deidentify{Name: s.Name}
	if s.KeyFile == nil {
		l.errorf(s.DefRange, "Missing key_file", "%s needs key_file: a file of at least %d random bytes (e.g. `head -c 32 /dev/urandom > deid.key`) from which every replacement is derived.", what, deid.MinKeyLen)
		return d
	}
	d.KeyFile = l.filePath(s.KeyFile, what+" key_file", "")
	if d.KeyFile == "" {
		return d
	}
	key, err := os.ReadFile(d.KeyFile)
	switch {
	case err != nil:
		hint := ""
		if errors.Is(err, fs.ErrNotExist) {
			hint = fmt.Sprintf(" Create one with `(umask 077 && head -c %d /dev/urandom > %s)` (`dicomedge serve --dev` creates it for development), and keep it: another key gives new UIDs and pseudonyms.", deid.MinKeyLen, d.KeyFile)
		}
		l.errorf(s.KeyFile.Expr.Range(), "Unreadable key file", "%s key_file: %s.%s", what, errText(err), hint)
		return d
	case len(key) < deid.MinKeyLen:
		l.errorf(s.KeyFile.Expr.Range(), "Key too short", "%s key_file %q holds %d bytes; a key needs at least %d random bytes.", what, d.KeyFile, len(key), deid.MinKeyLen)
		return d
	}
	cfg.Key = key
	p, err := deid.NewProfile(cfg)
	if err != nil {
		l.errorf(s.DefRange, "Invalid deidentify block", "%s: %v.", what, err)
		return d
	}
	d.Profile = p
	return d
}

func hasBoth(list []string, a, b string) bool {
	var x, y bool
	for _, s := range list {
		x, y = x || s == a, y || s == b
	}
	return x && y
}

// tags parses a list of attributes: "(0008,0060)", "0008,0060" or a keyword.
func (l *loader) tags(a *hcl.Attribute, what string) []uint32 {
	var out []uint32
	for _, v := range l.strList(a) {
		tag, err := deid.ParseTag(v.s)
		if err != nil {
			l.errorf(v.rng, "Unknown attribute", "%s: %v.", what, err)
			continue
		}
		out = append(out, tag)
	}
	return out
}

// relayDeidentify links a relay's deidentify to its block and checks the
// services: queries and retrieves of a de-identified view are not offered,
// so such a rule allows C-ECHO and C-STORE only.
func (l *loader) relayDeidentify(name string, s *relaySchema, r *rule) {
	v, ok := l.str(s.Deidentify, "")
	if !ok || s.Deidentify == nil {
		return
	}
	d, found := l.deids[v.s]
	if !found {
		names := make([]string, 0, len(l.deids))
		for n := range l.deids {
			names = append(names, n)
		}
		l.errorf(v.rng, "Unknown deidentify block", "rule %q names deidentify %q, which is not defined.%s", name, v.s, didYouMean(v.s, names))
		return
	}
	r.decision.Deidentify = d
	// A store-and-forward rule without services allows exactly C-ECHO and
	// C-STORE already.
	if (s.Services == nil && !r.decision.StoreAndForward) || r.services&^(svcCEcho|svcCStore) != 0 {
		rng := s.DefRange
		if s.Services != nil {
			rng = s.Services.Expr.Range()
		}
		l.errorf(rng, "Service not allowed with deidentify", "rule %q de-identifies, so it may allow only C-ECHO and C-STORE: queries and retrieves would show the original data; set services = [\"C-ECHO\", \"C-STORE\"].", name)
	}
}
