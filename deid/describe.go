package deid

import (
	"fmt"
	"slices"
	"strings"
)

// Describe says in one line what the profile applies, for `policy
// explain`: the profile, its options, the sizes of the policy's keep,
// remove and replace lists, and what becomes of burned-in annotation.
func (p *Profile) Describe() string {
	var opts []string
	for i, o := range Options {
		if p.options[i] {
			opts = append(opts, o.Name)
		}
	}
	parts := []string{"basic"}
	if len(opts) > 0 {
		parts = append(parts, "options "+strings.Join(opts, ", "))
	} else {
		parts = append(parts, "no options")
	}
	for _, l := range []struct {
		name string
		tags []uint32
	}{{"keep", mapKeys(p.keep)}, {"remove", mapKeys(p.remove)}, {"replace", mapKeys(p.replace)}} {
		if len(l.tags) == 0 {
			continue
		}
		slices.Sort(l.tags)
		names := make([]string, len(l.tags))
		for i, t := range l.tags {
			names[i] = FormatTag(t)
		}
		parts = append(parts, fmt.Sprintf("%s %s", l.name, strings.Join(names, " ")))
	}
	if p.burnedIn {
		parts = append(parts, "burned_in pass")
	} else {
		parts = append(parts, "burned_in refuse")
	}
	return strings.Join(parts, "; ")
}

func mapKeys[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
