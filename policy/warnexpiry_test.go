package policy

import (
	"slices"
	"testing"
	"time"
)

// tls.warn_expiry defaults to 14 days, takes days or Go durations, and a
// bad value is reported on its own line and column.
func TestWarnExpiry(t *testing.T) {
	tlsWith := func(attr string) string {
		return `
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
  ` + attr + `
}
`
	}
	cfg, diags := Load("p.hcl", []byte(tlsWith("")))
	if len(diags) != 0 || cfg.TLS.WarnExpiry != 14*24*time.Hour {
		t.Fatalf("default: %v %q", cfg.TLS.WarnExpiry, diagKeys(diags))
	}
	for in, want := range map[string]time.Duration{
		`"30d"`: 30 * 24 * time.Hour, `"1d12h"`: 36 * time.Hour, `"72h"`: 72 * time.Hour, `"0"`: 0, `" 7d "`: 7 * 24 * time.Hour,
	} {
		cfg, diags := Load("p.hcl", []byte(tlsWith("warn_expiry = "+in)))
		if len(diags) != 0 || cfg.TLS.WarnExpiry != want {
			t.Errorf("warn_expiry = %s: %v %q, want %v", in, cfg.TLS.WarnExpiry, diagKeys(diags), want)
		}
	}
	for in, want := range map[string]string{
		`"fortnight"`: "6:17 error: Invalid duration",
		`"14"`:        "6:17 error: Invalid duration",
		`"-1d"`:       "6:17 error: Invalid duration",
		`"d"`:         "6:17 error: Invalid duration",
		`"1d-1h"`:     "6:17 error: Invalid duration",
		`"367d"`:      "6:17 error: Value out of range",
		`"-5h"`:       "6:17 error: Value out of range",
		`14`:          "",
		`["14d"]`:     "6:17 error: Unsuitable value type",
	} {
		_, diags := Load("p.hcl", []byte(tlsWith("warn_expiry = "+in)))
		got := diagKeys(diags)
		if want == "" {
			// A bare number converts to the string "14", which is no duration.
			want = "6:17 error: Invalid duration"
		}
		if !slices.Contains(got, want) || len(got) != 1 {
			t.Errorf("warn_expiry = %s: diagnostics %q, want [%s]", in, got, want)
		}
	}
}

func TestFormatDays(t *testing.T) {
	for d, want := range map[time.Duration]string{
		14 * 24 * time.Hour: "14d", 36 * time.Hour: "1d12h0m0s", 72 * time.Hour: "3d", time.Hour: "1h0m0s", 0: "0s",
	} {
		if got := FormatDays(d); got != want {
			t.Errorf("FormatDays(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDays(FormatDays(d)); err != nil || back != d {
			t.Errorf("ParseDays(FormatDays(%v)) = %v, %v", d, back, err)
		}
	}
}

// FuzzParseDays: any input either fails or gives a duration that
// FormatDays writes back to the same value; nothing panics.
func FuzzParseDays(f *testing.F) {
	for _, s := range []string{"14d", "1d12h", "72h", "0", "d", "-1d", "1d-1h", "99999d", "65535d", "1.5d", " 7d ", "1dd", "1d1d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDays(s)
		if err != nil || d < 0 {
			return
		}
		back, err := ParseDays(FormatDays(d))
		if err != nil || back != d {
			t.Fatalf("ParseDays(%q) = %v; FormatDays gives %q, which reads back as %v, %v", s, d, FormatDays(d), back, err)
		}
	})
}

func TestParseDaysOverflow(t *testing.T) {
	if d, err := ParseDays("65535d2562047h"); err == nil {
		t.Fatalf("ParseDays of more than time.Duration holds = %v, want an error", d)
	}
}
