package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDays reads a duration as time.ParseDuration does, and also in whole
// days, which is how certificate lifetimes are spoken of: "14d", "1d12h".
// A day is 24 hours.
func ParseDays(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil || days == "" || days[0] == '+' {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest == "" {
		return d, nil
	}
	r, err := time.ParseDuration(rest)
	if err != nil || r < 0 || d+r < d { // d+r < d: past time.Duration's 292 years
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d + r, nil
}

// FormatDays writes d as ParseDays reads it: whole days as "14d", the rest
// as time.Duration does ("1d12h0m0s").
func FormatDays(d time.Duration) string {
	const day = 24 * time.Hour
	if d < day {
		return d.String()
	}
	s := strconv.FormatInt(int64(d/day), 10) + "d"
	if r := d % day; r != 0 {
		s += r.String()
	}
	return s
}
