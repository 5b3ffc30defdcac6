package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

// TestAcceptance drives the built binary only through its documented surface
// (README.md, docs/), as an outside check does: certs init, serve on the bundled policy.hcl (ports
// moved to free loopback ports), real DCMTK peers (answered, rejected, a TLS
// failure, a relay to storescp, a refused DIMSE after SIGHUP), /metrics,
// /healthz, /readyz, SIGINT → 0, a restart continuing the chain, then every
// audit command and policy check/explain on what the run produced.
func TestAcceptance(t *testing.T) {
	testpeer.Require(t, "echoscu", "storescu", "storescp")
	bin := buildBinary(t)
	dir := t.TempDir()
	run := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return testpeer.ExitCode(err), o.String(), e.String()
	}

	// certs init: defaults --dir certs and one client named "client".
	if code, out, errOut := run("certs", "init"); code != 0 {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "edge.pem", "edge-key.pem", "client.pem", "client-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "certs", f)); err != nil {
			t.Errorf("certs init did not create certs/%s: %v", f, err)
		}
	}
	if code, _, errOut := run("certs", "init", "--dir", "other"); code != 0 {
		t.Fatalf("certs init --dir other: exit %d\n%s", code, errOut)
	}

	// The bundled policy, ports moved; the backend is storescp under another
	// AE title so that the called-AE rewrite shows, and a small max PDU so
	// that the clamp shows against peers offering 128 KiB.
	pacs := testpeer.StartStoreSCP(t, "REALPACS", "-d", "--max-pdu", "131072")
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	bundled, err := os.ReadFile(filepath.Join("..", "..", "policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	policySrc := string(bundled)
	for _, r := range [][2]string{
		{`"127.0.0.1:2762"`, fmt.Sprintf("%q", listen)},
		{`"127.0.0.1:9102"`, fmt.Sprintf("%q", admin)},
		{`"127.0.0.1:11112"`, fmt.Sprintf("%q", pacs.Addr)},
		{`ae_title = "MAINPACS"`, `ae_title = "REALPACS"`},
		{"max_pdu_length   = 1048576", "max_pdu_length   = 65536"},
	} {
		if !strings.Contains(policySrc, r[0]) {
			t.Fatalf("bundled policy.hcl no longer contains %s", r[0])
		}
		policySrc = strings.Replace(policySrc, r[0], r[1], 1)
	}
	config := filepath.Join(dir, "policy.hcl")
	if err := os.WriteFile(config, []byte(policySrc), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its deidentify key, as serve --dev would create it.
	if _, err := policy.CreateDevKeys(config); err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(dir, "var", "audit", "audit.jsonl")

	serve := func() *testpeer.Process {
		t.Helper()
		p := testpeer.Start(t, bin, "serve", "--config", config)
		testpeer.WaitListening(t, listen, 30*time.Second, p)
		testpeer.WaitListening(t, admin, 10*time.Second, p) // opened just after the DICOM listener
		return p
	}
	stop := func(p *testpeer.Process, sig syscall.Signal) {
		t.Helper()
		_ = p.Cmd.Process.Signal(sig)
		select {
		case <-p.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("serve did not stop after %v", sig)
		}
		if code := testpeer.ExitCode(p.Err()); code != 0 {
			t.Fatalf("serve exit %d after %v, want 0\n%s", code, sig, p.Output())
		}
	}
	certs := filepath.Join(dir, "certs")
	tlsArgs := []string{"+tls", filepath.Join(certs, "client-key.pem"), filepath.Join(certs, "client.pem"), "+cf", filepath.Join(certs, "ca.pem")}
	// dcmtk runs tool with args, then the edge's host and port, then files.
	dcmtk := func(tool string, args []string, files ...string) (string, error) {
		t.Helper()
		ctx := testpeer.Context(t, 30*time.Second)
		args = append(append(append([]string{}, args...), testpeer.Host(listen), fmt.Sprint(testpeer.Port(listen))), files...)
		return testpeer.Run(ctx, tool, args...)
	}
	echo := func(calling, called string) (string, error) {
		return dcmtk("echoscu", append(append([]string{}, tlsArgs...), "-aet", calling, "-aec", called))
	}

	p := serve()
	if code, body := httpGet(t, "http://"+admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	// /readyz turns 200 once Serve has taken the listener, a moment after
	// the admin listener opens (503 before that is right: not ready yet).
	waitFor(t, "/readyz 200", func() bool { code, _ := httpGet(t, "http://"+admin+"/readyz"); return code == 200 })

	// Answered, rejected by rule "deny", and a client of another CA.
	if out, err := echo("MODALITY1", "DICOMEDGE"); err != nil {
		t.Fatalf("echoscu answered by the edge: %v\n%s", err, out)
	}
	if out, err := echo("MODALITY1", "NOSUCHAE"); err == nil || !strings.Contains(out, "Calling AE Title Not Recognized") {
		t.Errorf("echoscu to NOSUCHAE: %v, want A-ASSOCIATE-RJ calling AE not recognized\n%s", err, out)
	}
	other := filepath.Join(dir, "other")
	if out, err := dcmtk("echoscu", []string{"+tls", filepath.Join(other, "client-key.pem"), filepath.Join(other, "client.pem"),
		"+cf", filepath.Join(certs, "ca.pem"), "-aet", "MODALITY1", "-aec", "DICOMEDGE"}); err == nil {
		t.Errorf("a client certificate from another CA was accepted:\n%s", out)
	}

	// Relay: storescu → edge (MAINPACS) → storescp (REALPACS).
	files, _ := testpeer.WriteDICOMFiles(t, filepath.Join(dir, "images"), "PAT-ACC-1", 1, 64, 64)
	storeArgs := append(append([]string{"-d", "--max-pdu", "131072"}, tlsArgs...), "-aet", "MODALITY1", "-aec", "MAINPACS")
	scu, err := dcmtk("storescu", storeArgs, files[0])
	if err != nil {
		t.Fatalf("storescu through the relay: %v\n%s", err, scu)
	}
	if pacs.Count() != 1 {
		t.Errorf("storescp stored %d files, want 1", pacs.Count())
	}
	// DCMTK -d dumps the RQ and AC; the last dump is the one that counts
	// (storescp's first is WaitListening's empty connection).
	last := func(re *regexp.Regexp, out string) string {
		m := re.FindAllStringSubmatch(out, -1)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1][1]
	}
	maxPDU := regexp.MustCompile(`Their Max PDU Receive Size:[ \t]+(\d+)`)
	calledAE := regexp.MustCompile(`Called Application Name:[ \t]+(\S+)`)
	if got := last(maxPDU, scu); got != "65536" {
		t.Errorf("client saw max PDU %q in the AC, want 65536 (clamped to max_pdu_length)", got)
	}
	if got := last(calledAE, scu); got != "MAINPACS" {
		t.Errorf("client saw called AE %q in the AC, want MAINPACS restored", got)
	}
	if got := last(maxPDU, pacs.Output()); got != "65536" {
		t.Errorf("backend saw max PDU %q in the RQ, want 65536", got)
	}
	if got := last(calledAE, pacs.Output()); got != "REALPACS" {
		t.Errorf("backend saw called AE %q, want REALPACS (the backend's ae_title)", got)
	}

	// SIGHUP with the relay narrowed to C-ECHO: C-STORE is refused by the
	// edge with 0x0124 and does not reach storescp.
	narrowed := strings.Replace(policySrc, `services = ["C-ECHO", "C-STORE", "C-FIND"]`, `services = ["C-ECHO"]`, 1)
	if err := os.WriteFile(config, []byte(narrowed), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "policy.reloaded", func() bool { return len(recordsOf(t, auditFile, "policy.reloaded")) == 1 })
	if out, err := dcmtk("storescu", append(append([]string{"-v"}, tlsArgs...), "-aet", "MODALITY1", "-aec", "MAINPACS"), files[0]); err == nil ||
		!strings.Contains(out, "Status: 0x124") { // storescu -v: "Received Store Response (Unknown Status: 0x124)"
		t.Errorf("C-STORE after narrowing: %v, want status 0x0124\n%s", err, out)
	}
	if pacs.Count() != 1 {
		t.Errorf("storescp has %d files after the refused C-STORE, want still 1", pacs.Count())
	}

	// Metrics: every dicomedge_ sample named dicomedge_<what>_<unit>, and
	// the two families README.md names, with the labels this run produced.
	waitFor(t, "association.released records", func() bool { return len(recordsOf(t, auditFile, "association.released")) >= 3 })
	code, metrics := httpGet(t, "http://"+admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	name := regexp.MustCompile(`^dicomedge_[a-z0-9]+(_[a-z0-9]+)+$`)
	seen := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "dicomedge_") {
			continue
		}
		n := line[:strings.IndexAny(line, "{ ")]
		seen[n] = true
		if !name.MatchString(n) {
			t.Errorf("metric %q is not dicomedge_<what>_<unit>", n)
		}
	}
	for _, want := range []string{
		`dicomedge_associations_total{decision="answer",rule="echo"} 1`,
		`dicomedge_associations_total{decision="reject",rule="deny"} 1`,
		`dicomedge_associations_total{decision="relay",rule="modalities-to-pacs"} 2`,
		`dicomedge_tls_handshake_failures_total{reason="unknown-ca"} 1`,
		`dicomedge_tls_handshake_failures_total{reason="revoked"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	stop(p, syscall.SIGINT)

	// A restart continues the chain: one more answered association.
	p = serve()
	if out, err := echo("CT1", "DICOMEDGE"); err != nil {
		t.Fatalf("echoscu after restart: %v\n%s", err, out)
	}
	waitFor(t, "release after restart", func() bool { return len(recordsOf(t, auditFile, "association.released")) >= 4 })
	stop(p, syscall.SIGTERM)

	checkAuditRecords(t, auditFile)

	// audit: table, JSON, filters, summary.
	code, table, errOut := run("audit")
	if code != 0 || !strings.HasPrefix(table, "TIME") || !strings.Contains(table, "association.rejected") || !strings.Contains(table, "calling-ae-not-recognized") {
		t.Errorf("audit: exit %d\n%s%s", code, table, errOut)
	}
	raw, _ := os.ReadFile(auditFile)
	code, jsonOut, _ := run("audit", "--config", "policy.hcl", "--json")
	if code != 0 || jsonOut != string(raw) {
		t.Errorf("audit --config policy.hcl --json: exit %d; output differs from the log's lines", code)
	}
	filters := []struct {
		args  []string
		event map[string]bool // events allowed in the output; nil: any
		min   int
	}{
		{[]string{"--event", "dimse"}, map[string]bool{"dimse": true}, 3},
		{[]string{"--event", "association.*", "--decision", "reject"}, map[string]bool{"association.rejected": true}, 1},
		{[]string{"--decision", "relay", "--event", "association.accepted"}, map[string]bool{"association.accepted": true}, 2},
		{[]string{"--calling-ae", "CT1"}, nil, 3},
		{[]string{"--called-ae", "NOSUCHAE"}, map[string]bool{"association.rejected": true}, 1},
		{[]string{"--client", "client", "--since", "1h"}, nil, 10},
		{[]string{"--event", "tls.failed", "--since", "1d"}, map[string]bool{"tls.failed": true}, 1},
		{[]string{"--until", "2000-01-01"}, nil, 0},
	}
	for _, f := range filters {
		code, out, errOut := run(append([]string{"audit", "--json"}, f.args...)...)
		lines := nonEmpty(out)
		if code != 0 || len(lines) < f.min || (f.min == 0 && len(lines) != 0) {
			t.Errorf("audit --json %v: exit %d, %d lines, want >= %d\n%s", f.args, code, len(lines), f.min, errOut)
		}
		for _, l := range lines {
			var r struct{ Event string }
			if json.Unmarshal([]byte(l), &r) != nil || (f.event != nil && !f.event[r.Event]) {
				t.Errorf("audit --json %v printed %s", f.args, l)
			}
		}
	}
	code, summary, _ := run("audit", "summary")
	for _, want := range []string{"By client:", "By AE pair (calling→called):", "By decision:", "Reject reasons:", "calling-ae-not-recognized", "tls: unknown-ca", "bytes moved:", "MODALITY1→MAINPACS"} {
		if code != 0 || !strings.Contains(summary, want) {
			t.Errorf("audit summary (exit %d) lacks %q:\n%s", code, want, summary)
		}
	}

	// audit verify: intact → 0; one byte edited → 1, naming the record.
	if code, out, errOut := run("audit", "verify"); code != 0 || !strings.Contains(out, "hash chain intact") {
		t.Errorf("audit verify: exit %d\n%s%s", code, out, errOut)
	}
	i := bytes.Index(raw, []byte(`"called_ae":"NOSUCHAE"`))
	if i < 0 {
		t.Fatal("no NOSUCHAE record to edit")
	}
	edited := append([]byte{}, raw...)
	edited[i+len(`"called_ae":"NOSUCHA`)] = 'F'
	if err := os.WriteFile(auditFile, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run("audit", "verify", "--file", auditFile); code != 1 || !strings.Contains(errOut, auditFile+":") {
		t.Errorf("audit verify after editing a byte: exit %d, want 1 naming %s:<line>\n%s%s", code, auditFile, out, errOut)
	}

	// policy check and explain on the same configuration.
	if code, out, errOut := run("policy", "check"); code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("policy check: exit %d\n%s%s", code, out, errOut)
	}
	explains := []struct {
		args  []string
		first string
		also  string
	}{
		{[]string{"--cert", "certs/client.pem", "--calling-ae", "MODALITY1", "--called-ae", "DICOMEDGE"}, "answer", `rule: "echo"`},
		{[]string{"--cert", "certs/client.pem", "--calling-ae", "CT1", "--called-ae", "MAINPACS"}, "relay pacs", `rule "echo": called_ae "MAINPACS" does not match`},
		{[]string{"--cn", "ct1.clinic-a.example.org", "--dns", "ct1.clinic-a.example.org", "--uri", "spiffe://example.org/ct1", "--source-ip", "203.0.113.9",
			"--calling-ae", "CLINA_CT1", "--called-ae", "MAINPACS"}, "relay pacs", `rule: "clinic-a"`},
		{[]string{"--cn", "client", "--source-ip", "198.51.100.1", "--calling-ae", "X", "--called-ae", "NOSUCHAE"}, "reject calling-ae-not-recognized", "A-ASSOCIATE-RJ: result 1 (permanent), source 1, reason 3"},
	}
	for _, e := range explains {
		code, out, errOut := run(append([]string{"policy", "explain"}, e.args...)...)
		if first, _, _ := strings.Cut(out, "\n"); code != 0 || first != e.first || !strings.Contains(out, e.also) {
			t.Errorf("policy explain %v: exit %d, first line %q want %q, and %q\n%s%s", e.args, code, first, e.first, e.also, out, errOut)
		}
	}
	if code, out, _ := run("version"); code != 0 || !strings.HasPrefix(out, "dicomedge ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
}

// checkAuditRecords checks every record against docs/audit.md,
// computing the hash chain independently of the audit package.
func checkAuditRecords(t *testing.T, file string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	timeRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)
	fpRE := regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	statusRE := regexp.MustCompile(`^0x[0-9A-F]{4}$`)
	// Fields each event must carry in this run (docs/audit.md).
	required := map[string][]string{
		"tls.failed":           {"reason", "conn", "remote"},
		"association.accepted": {"rule", "action", "contexts", "conn", "assoc", "remote", "client", "calling_ae", "called_ae"},
		"association.rejected": {"rule", "result", "source", "reason", "client", "calling_ae", "called_ae"},
		"dimse":                {"service", "sop_class", "message_id", "status", "bytes", "ms", "allowed", "assoc"},
		"association.released": {"bytes_in", "bytes_out", "ms", "assoc"},
		"policy.reloaded":      {"detail"},
	}
	prev := strings.Repeat("0", 64)
	counts := map[string]int{}
	lines := nonEmpty(string(raw))
	for i, line := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d is not JSON: %v", i+1, err)
		}
		ev, _ := r["event"].(string)
		counts[ev]++
		if s, _ := r["time"].(string); !timeRE.MatchString(s) {
			t.Errorf("line %d: time %q is not RFC 3339 UTC with nanoseconds", i+1, s)
		}
		if seq, _ := r["seq"].(float64); seq != float64(i+1) {
			t.Errorf("line %d: seq %v, want %d", i+1, r["seq"], i+1)
		}
		if r["prev"] != prev {
			t.Errorf("line %d: prev %v, want %s", i+1, r["prev"], prev)
		}
		sum := sha256.Sum256([]byte(line))
		prev = hex.EncodeToString(sum[:])
		for _, k := range required[ev] {
			if _, ok := r[k]; !ok {
				t.Errorf("line %d: %s record lacks %q: %s", i+1, ev, k, line)
			}
		}
		if c, ok := r["client"].(map[string]any); ok {
			if c["cn"] != "client" || c["subject"] == nil || c["issuer"] == nil || !fpRE.MatchString(fmt.Sprint(c["fingerprint"])) {
				t.Errorf("line %d: client %v, want cn, subject, issuer and a sha256:<hex> fingerprint", i+1, c)
			}
		}
		switch ev {
		case "association.accepted":
			ctxs, _ := r["contexts"].([]any)
			uniq := map[any]bool{}
			for _, c := range ctxs {
				uniq[c] = true
			}
			if len(uniq) != len(ctxs) || len(ctxs) == 0 {
				t.Errorf("line %d: contexts %v, want accepted abstract syntaxes, each once", i+1, ctxs)
			}
			if a := r["action"]; a != "answer" && a != "relay" || (a == "relay" && r["backend"] != "pacs") {
				t.Errorf("line %d: action %v backend %v", i+1, a, r["backend"])
			}
		case "association.rejected":
			if r["called_ae"] == "NOSUCHAE" && (r["rule"] != "deny" || r["result"] != 1.0 || r["source"] != 1.0 || r["reason"] != "calling-ae-not-recognized") {
				t.Errorf("line %d: reject %s, want rule deny, result 1, source 1, calling-ae-not-recognized", i+1, line)
			}
		case "tls.failed":
			if r["reason"] != "unknown-ca" {
				t.Errorf("line %d: tls.failed reason %v, want unknown-ca", i+1, r["reason"])
			}
		case "dimse":
			if !statusRE.MatchString(fmt.Sprint(r["status"])) {
				t.Errorf("line %d: status %v, want 0xHHHH", i+1, r["status"])
			}
			if r["service"] == "C-STORE" {
				refused := r["status"] == "0x0124"
				if r["allowed"] != !refused || r["sop_instance"] == nil {
					t.Errorf("line %d: C-STORE %s: want allowed = (status != 0x0124) and sop_instance", i+1, line)
				}
				if !refused && (!strings.HasPrefix(fmt.Sprint(r["patient_id"]), "hmac-sha256:") || r["bytes"].(float64) < 8192) {
					t.Errorf("line %d: stored C-STORE %s: want a hashed patient_id and the data set's bytes", i+1, line)
				}
			}
		case "policy.reloaded":
			if !strings.Contains(fmt.Sprint(r["detail"]), "4 rules") {
				t.Errorf("line %d: reload detail %v, want the rule count", i+1, r["detail"])
			}
		}
	}
	for ev, min := range map[string]int{"tls.failed": 1, "association.accepted": 4, "association.rejected": 1, "dimse": 4,
		"association.released": 4, "policy.reloaded": 1} {
		if counts[ev] < min {
			t.Errorf("%d %s records, want at least %d (have %v)", counts[ev], ev, min, counts)
		}
	}
}

func recordsOf(t *testing.T, file, event string) []string {
	t.Helper()
	var out []string
	for _, e := range auditEvents(t, file) {
		if e == event {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func nonEmpty(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
