package audit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

var whenLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"}

// ParseWhen reads a --since/--until value as `dicomedge audit` and the
// console take it: a duration (that long before now: 90m, 7d, 1d12h) or a
// time; times without a zone are UTC, like the log. "" is the zero time.
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, l := range whenLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (1h30m, 7d) nor a time (2006-01-02T15:04:05Z)", s)
}

// ParseDuration is time.ParseDuration plus a leading whole number of days
// ("7d", "1d12h"): administrators review audit trails in days, and Go
// durations stop at hours.
func ParseDuration(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil || days == "" || days[0] == '+' {
		return 0, fmt.Errorf("bad day count in %q", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest == "" {
		return d, nil
	}
	r, err := time.ParseDuration(rest)
	if err != nil || r < 0 || r > math.MaxInt64-d {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d + r, nil
}
