package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func loadTestdata(t testing.TB, name string) *Config {
	t.Helper()
	cfg, diags := LoadFile("testdata/" + name)
	if diags.HasErrors() {
		var b strings.Builder
		WriteDiagnostics(&b, diags, cfg.Files)
		t.Fatalf("loading %s:\n%s", name, b.String())
	}
	return cfg
}

const (
	blockedFP = "sha256:abcd000000000000000000000000000000000000000000000000000000000001"
	fpText    = `["sha256:AB:CD:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01"]`
)

// Why lines for rules that do not match the inputs below, reused across cases.
var (
	notBlocked = `rule "blocked-fingerprint": client_fingerprint "" does not match ` + fpText
	notClinicA = `rule "clinic-a": client_cn "" does not match ["*.clinic-a.example.org"]`
	notAIByDNS = `rule "ai-vendor": client_dns (none in the certificate) does not match ["ai.vendor.example", "*.ai.vendor.example"]`
	notTelerad = `rule "teleradiology": client_email (none in the certificate) does not match ["*@telerad.example"]`
)

func TestDecisions(t *testing.T) {
	cfg := loadTestdata(t, "many.hcl")
	clinicA := func(mod func(*Input)) Input {
		in := Input{
			CN:        "ct1.clinic-a.example.org",
			URI:       []string{"spiffe://example.org/clinic-a/ct1"},
			SourceIP:  netip.MustParseAddr("203.0.113.7"),
			CallingAE: "CLINA_CT1",
			CalledAE:  "MAINPACS",
		}
		if mod != nil {
			mod(&in)
		}
		return in
	}
	cases := []struct {
		name     string
		in       Input
		decision string
		rule     string
		reject   [3]uint8 // result, source, reason when rejected
		steps    []string // Why of every step, in order
	}{
		{
			name: "clinic-a modality is relayed", in: clinicA(nil),
			decision: "relay pacs", rule: "clinic-a",
			steps: []string{notBlocked,
				`rule "clinic-a": matches (client_cn "ct1.clinic-a.example.org", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 203.0.113.7, calling_ae "CLINA_CT1", called_ae "MAINPACS")`},
		},
		{
			name: "certificate names compare case-insensitively", in: clinicA(func(in *Input) { in.CN = "CT1.Clinic-A.Example.ORG" }),
			decision: "relay pacs", rule: "clinic-a",
			steps: []string{notBlocked,
				`rule "clinic-a": matches (client_cn "CT1.Clinic-A.Example.ORG", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 203.0.113.7, calling_ae "CLINA_CT1", called_ae "MAINPACS")`},
		},
		{
			name: "AE titles are compared without their padding", in: clinicA(func(in *Input) { in.CallingAE, in.CalledAE = "CLINA_CT1       ", " MAINPACS " }),
			decision: "relay pacs", rule: "clinic-a",
			steps: []string{notBlocked,
				`rule "clinic-a": matches (client_cn "ct1.clinic-a.example.org", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 203.0.113.7, calling_ae "CLINA_CT1", called_ae "MAINPACS")`},
		},
		{
			name: "IPv4-mapped IPv6 source matches the IPv4 network", in: clinicA(func(in *Input) { in.SourceIP = netip.MustParseAddr("::ffff:203.0.113.200") }),
			decision: "relay pacs", rule: "clinic-a",
			steps: []string{notBlocked,
				`rule "clinic-a": matches (client_cn "ct1.clinic-a.example.org", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 203.0.113.200, calling_ae "CLINA_CT1", called_ae "MAINPACS")`},
		},
		{
			name: "IPv6 source inside the IPv6 network", in: clinicA(func(in *Input) { in.SourceIP = netip.MustParseAddr("2001:db8:a:1::5") }),
			decision: "relay pacs", rule: "clinic-a",
			steps: []string{notBlocked,
				`rule "clinic-a": matches (client_cn "ct1.clinic-a.example.org", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 2001:db8:a:1::5, calling_ae "CLINA_CT1", called_ae "MAINPACS")`},
		},
		{
			name: "clinic-a from outside its networks falls through to the default", in: clinicA(func(in *Input) { in.SourceIP = netip.MustParseAddr("2001:db8:b::5") }),
			decision: "reject calling-ae-not-recognized", reject: [3]uint8{1, 1, 3},
			steps: []string{notBlocked,
				`rule "clinic-a": source address 2001:db8:b::5 is not in source_cidr ["203.0.113.0/24", "2001:db8:a::/48"]`,
				notAIByDNS, notTelerad,
				`rule "echo": called_ae "MAINPACS" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": calling_ae "CLINA_CT1" does not match ["LEGACY*"]`},
		},
		{
			name: "unknown source address never matches a source_cidr", in: clinicA(func(in *Input) { in.SourceIP = netip.Addr{} }),
			decision: "reject calling-ae-not-recognized", reject: [3]uint8{1, 1, 3},
			steps: []string{notBlocked,
				`rule "clinic-a": source address (unknown) is not in source_cidr ["203.0.113.0/24", "2001:db8:a::/48"]`,
				notAIByDNS, notTelerad,
				`rule "echo": called_ae "MAINPACS" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": calling_ae "CLINA_CT1" does not match ["LEGACY*"]`},
		},
		{
			name: "wrong calling AE names the attribute", in: clinicA(func(in *Input) { in.CallingAE = "CT9" }),
			decision: "reject calling-ae-not-recognized", reject: [3]uint8{1, 1, 3},
			steps: []string{notBlocked,
				`rule "clinic-a": calling_ae "CT9" does not match ["CLINA_*"]`,
				notAIByDNS, notTelerad,
				`rule "echo": called_ae "MAINPACS" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": calling_ae "CT9" does not match ["LEGACY*"]`},
		},
		{
			name: "URIs compare case-sensitively", in: clinicA(func(in *Input) { in.URI = []string{"SPIFFE://example.org/clinic-a/ct1"} }),
			decision: "reject calling-ae-not-recognized", reject: [3]uint8{1, 1, 3},
			steps: []string{notBlocked,
				`rule "clinic-a": client_uri ["SPIFFE://example.org/clinic-a/ct1"] does not match ["spiffe://example.org/clinic-a/*"]`,
				notAIByDNS, notTelerad,
				`rule "echo": called_ae "MAINPACS" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": calling_ae "CLINA_CT1" does not match ["LEGACY*"]`},
		},
		{
			name: "any DNS name of the certificate may match", in: Input{DNS: []string{"other.example", "Node1.AI.vendor.example"}, CallingAE: "AI01", CalledAE: "RESEARCH"},
			decision: "relay research", rule: "ai-vendor",
			steps: []string{notBlocked, notClinicA,
				`rule "ai-vendor": matches (client_dns ["other.example", "Node1.AI.vendor.example"], calling_ae "AI01")`},
		},
		{
			name: "question mark is exactly one character", in: Input{DNS: []string{"ai.vendor.example"}, CallingAE: "AI001", CalledAE: "RESEARCH"},
			decision: "reject calling-ae-not-recognized", reject: [3]uint8{1, 1, 3},
			steps: []string{notBlocked, notClinicA,
				`rule "ai-vendor": calling_ae "AI001" does not match ["AI??"]`,
				notTelerad,
				`rule "echo": called_ae "RESEARCH" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": calling_ae "AI001" does not match ["LEGACY*"]`},
		},
		{
			name: "blocked certificate is rejected transiently before anything else", in: clinicA(func(in *Input) { in.Fingerprint = blockedFP }),
			decision: "reject no-reason", rule: "blocked-fingerprint", reject: [3]uint8{2, 1, 1},
			steps: []string{`rule "blocked-fingerprint": matches (client_fingerprint "` + blockedFP + `")`},
		},
		{
			name: "fingerprint in upper case still matches", in: Input{Fingerprint: strings.ToUpper(blockedFP), CalledAE: "DICOMEDGE"},
			decision: "reject no-reason", rule: "blocked-fingerprint", reject: [3]uint8{2, 1, 1},
			steps: []string{`rule "blocked-fingerprint": matches (client_fingerprint "` + strings.ToUpper(blockedFP) + `")`},
		},
		{
			name: "teleradiology by email address", in: Input{CN: "reader", Email: []string{"Reader@TELERAD.example"}, CallingAE: "TELERAD", CalledAE: "RESEARCH"},
			decision: "relay pacs", rule: "teleradiology",
			steps: []string{notBlocked,
				`rule "clinic-a": client_cn "reader" does not match ["*.clinic-a.example.org"]`,
				notAIByDNS,
				`rule "teleradiology": matches (client_email ["Reader@TELERAD.example"], called_ae "RESEARCH")`},
		},
		{
			name: "anyone may echo the edge", in: Input{CN: "x", CallingAE: "ANY", CalledAE: "DICOMEDGE"},
			decision: "answer", rule: "echo",
			steps: []string{notBlocked,
				`rule "clinic-a": client_cn "x" does not match ["*.clinic-a.example.org"]`,
				notAIByDNS, notTelerad,
				`rule "echo": matches (called_ae "DICOMEDGE")`},
		},
		{
			name: "legacy callers get called-AE-not-recognized", in: Input{CallingAE: "LEGACY7", CalledAE: "OLDPACS"},
			decision: "reject called-ae-not-recognized", rule: "unknown-called", reject: [3]uint8{1, 1, 7},
			steps: []string{notBlocked, notClinicA, notAIByDNS, notTelerad,
				`rule "echo": called_ae "OLDPACS" does not match ["DICOMEDGE"]`,
				`rule "unknown-called": matches (calling_ae "LEGACY7", called_ae "OLDPACS")`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := cfg.Policy.Evaluate(&tc.in)
			if d.String() != tc.decision || d.Rule != tc.rule {
				t.Errorf("Evaluate = %q by rule %q, want %q by rule %q", d, d.Rule, tc.decision, tc.rule)
			}
			if d.Action == ActionReject {
				if got := [3]uint8{d.Reject.Result, d.Reject.Source, d.Reject.Reason}; got != tc.reject {
					t.Errorf("reject codes = %v, want %v", got, tc.reject)
				}
			}
			e := cfg.Policy.Explain(&tc.in)
			if e.Decision.String() != d.String() || e.Decision.Rule != d.Rule {
				t.Errorf("Explain decided %q by %q, Evaluate %q by %q", e.Decision, e.Decision.Rule, d, d.Rule)
			}
			var got []string
			for i, s := range e.Steps {
				got = append(got, s.Why)
				if last := i == len(e.Steps)-1; s.Matched != (last && tc.rule != "") {
					t.Errorf("step %d (%s): Matched = %v", i, s.Rule, s.Matched)
				}
				if s.Range.Filename != "testdata/many.hcl" || s.Range.Start.Line == 0 {
					t.Errorf("step %d: range %v does not locate the rule", i, s.Range)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.steps, "\n") {
				t.Errorf("explanation:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tc.steps, "\n      "))
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	cfg := loadTestdata(t, "many.hcl")
	decide := func(in Input) Decision { return cfg.Policy.Evaluate(&in) }
	clinicA := decide(Input{CN: "a.clinic-a.example.org", URI: []string{"spiffe://example.org/clinic-a/x"},
		SourceIP: netip.MustParseAddr("203.0.113.1"), CallingAE: "CLINA_1", CalledAE: "MAINPACS"})
	ai := decide(Input{DNS: []string{"ai.vendor.example"}, CallingAE: "AI01"})
	telerad := decide(Input{Email: []string{"a@telerad.example"}, CalledAE: "MAINPACS"})
	echo := decide(Input{CalledAE: "DICOMEDGE"})
	reject := decide(Input{CalledAE: "NOBODY"})
	for _, d := range []Decision{clinicA, ai, telerad, echo} {
		if d.Rule == "" {
			t.Fatalf("fixture input matched no rule: %v", d)
		}
	}
	const (
		ctImage   = "1.2.840.10008.5.1.4.1.1.2"
		studyFind = "1.2.840.10008.5.1.4.1.2.2.1"
		studyMove = "1.2.840.10008.5.1.4.1.2.2.2"
	)
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"clinic-a may store", clinicA.AllowsService("C-STORE"), true},
		{"clinic-a may echo", clinicA.AllowsService("C-ECHO"), true},
		{"clinic-a may not move", clinicA.AllowsService("C-MOVE"), false},
		{"clinic-a may not N-ACTION", clinicA.AllowsService("N-ACTION"), false},
		{"clinic-a may cancel its finds", clinicA.AllowsService("C-CANCEL"), true},
		{"clinic-a service names are exact", clinicA.AllowsService("c-store"), false},
		{"clinic-a any SOP class", clinicA.AllowsSOPClass(ctImage), true},
		{"clinic-a no move destination", clinicA.AllowsMoveDestination("ANY"), false},
		{"ai may move", ai.AllowsService("C-MOVE"), true},
		{"ai may not store", ai.AllowsService("C-STORE"), false},
		{"ai may not echo", ai.AllowsService("C-ECHO"), false},
		{"ai listed SOP class", ai.AllowsSOPClass(studyMove), true},
		{"ai listed SOP class with NUL padding", ai.AllowsSOPClass(studyMove + "\x00"), true},
		{"ai unlisted SOP class", ai.AllowsSOPClass(studyFind), false},
		{"ai unlisted CT storage", ai.AllowsSOPClass(ctImage), false},
		{"ai exact move destination", ai.AllowsMoveDestination("AI_STORE"), true},
		{"ai padded move destination", ai.AllowsMoveDestination("AI_STORE        "), true},
		{"ai wildcard move destination", ai.AllowsMoveDestination("AI_GPU1_SCP"), true},
		{"ai other move destination", ai.AllowsMoveDestination("PACS"), false},
		{"ai move destination is case-sensitive", ai.AllowsMoveDestination("ai_store"), false},
		// One AE normalisation (association.TrimAE) and only VR AE values.
		{"ai NUL-padded move destination", ai.AllowsMoveDestination("AI_STORE\x00\x00"), true},
		{"ai destination with a control character", ai.AllowsMoveDestination("AI_GPU1\t_SCP"), false},
		{"ai destination with an inner NUL", ai.AllowsMoveDestination("AI_\x00_SCP"), false},
		{"ai destination with a backslash", ai.AllowsMoveDestination(`AI_X\Y_SCP`), false},
		{"telerad all services when none listed", telerad.AllowsService("N-ACTION"), true},
		{"telerad unknown service name", telerad.AllowsService("C-FETCH"), false},
		{"telerad no move destinations", telerad.AllowsMoveDestination("AI_STORE"), false},
		{"answer allows echo", echo.AllowsService("C-ECHO"), true},
		{"answer allows nothing else", echo.AllowsService("C-STORE"), false},
		{"reject allows no echo", reject.AllowsService("C-ECHO"), false},
		{"reject allows no SOP class", reject.AllowsSOPClass(ctImage), false},
		{"reject allows no move", reject.AllowsMoveDestination("AI_STORE"), false},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if got := strings.Join(ai.SOPClasses, ","); got != studyMove+",1.2.840.10008.5.1.4.1.2.2.3" {
		t.Errorf("ai.SOPClasses = %s", got)
	}
	if clinicA.SOPClasses != nil || clinicA.MoveDestinations != nil || telerad.Services != nil {
		t.Errorf("nil lists expected: %q %q %q", clinicA.SOPClasses, clinicA.MoveDestinations, telerad.Services)
	}
	if ai.Backend == nil || ai.Backend.TLS == nil || ai.Backend.TLS.ServerName != "research.internal" || ai.Backend.AETitle != "RESEARCH" {
		t.Errorf("ai backend = %+v", ai.Backend)
	}
}

func TestNilPolicyAndInputReject(t *testing.T) {
	var p *Policy
	for _, d := range []Decision{p.Evaluate(&Input{}), loadTestdata(t, "many.hcl").Policy.Evaluate(nil), p.Explain(nil).Decision} {
		if d.Action != ActionReject || d.Reject.Reason != 3 || d.Rule != "" {
			t.Errorf("got %+v, want the no-match reject", d)
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	cfg := loadTestdata(t, "many.hcl")
	inputs := map[string]*Input{
		"first rule":  {Fingerprint: blockedFP},
		"relay":       {CN: "ct1.clinic-a.example.org", URI: []string{"spiffe://example.org/clinic-a/ct1"}, SourceIP: netip.MustParseAddr("::ffff:203.0.113.7"), CallingAE: "CLINA_CT1 ", CalledAE: "MAINPACS"},
		"glob and ?":  {DNS: []string{"x.ai.vendor.example"}, CallingAE: "AI01"},
		"no match":    {CN: "nobody", DNS: []string{"a", "b"}, Email: []string{"e@x"}, CallingAE: "X", CalledAE: "Y"},
		"permissions": {CalledAE: "DICOMEDGE"},
	}
	for name, in := range inputs {
		allocs := testing.AllocsPerRun(200, func() {
			d := cfg.Policy.Evaluate(in)
			_ = d.AllowsService("C-STORE")
			_ = d.AllowsSOPClass("1.2.840.10008.1.1\x00")
			_ = d.AllowsMoveDestination("AI_STORE ")
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Evaluate", name, allocs)
		}
	}
}
