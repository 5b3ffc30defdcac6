package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

const (
	unitFile   = "../../contrib/dicomedge.service"
	alertsFile = "../../contrib/dicomedge-alerts.yml"
)

// contrib/dicomedge.service passes `systemd-analyze verify` (with the
// binary it names in place) and keeps the hardening README.md describes.
func TestSystemdUnitVerifies(t *testing.T) {
	testpeer.Require(t, "systemd-analyze")
	bin := buildBinary(t)
	src, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(src)
	for _, want := range []string{
		"\nUser=dicomedge\n", "\nGroup=dicomedge\n", "\nProtectSystem=strict\n", "\nNoNewPrivileges=yes\n",
		"\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "\nReadWritePaths=/var/lib/dicomedge/audit /var/lib/dicomedge/acme /var/lib/dicomedge/spool\n",
		"\nExecReload=/bin/kill -HUP $MAINPID\n", "\nKillSignal=SIGTERM\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", unitFile, strings.TrimSpace(want))
		}
	}
	if strings.Contains(unit, "DynamicUser=yes") {
		t.Errorf("%s uses DynamicUser: a dedicated user keeps the audit and ACME files' owner stable", unitFile)
	}
	verify := func(unit string) (string, error) {
		dir := t.TempDir()
		p := filepath.Join(dir, "dicomedge.service")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/dicomedge", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
		return string(out), err
	}
	// verify exits 0 on a setting it ignores but names the file: either
	// is a failure.
	if out, err := verify(unit); err != nil || strings.Contains(out, "dicomedge.service") {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
	// The check can fail: a bad value and a missing command are reported.
	for _, bad := range [][2]string{{"ProtectSystem=strict", "ProtectSystem=stricter"}, {"/bin/kill", "/bin/no-such-kill"}} {
		if out, err := verify(strings.Replace(unit, bad[0], bad[1], 1)); err == nil && !strings.Contains(out, "dicomedge.service") {
			t.Fatalf("systemd-analyze verify accepted %s:\n%s", bad[1], out)
		}
	}
	// systemd's own exposure score (lower is better). What is left at
	// maxExposure is what the edge needs: the host's network (IPv4, IPv6,
	// AF_UNIX), port 104 (CAP_NET_BIND_SERVICE, ambient, so no user
	// namespace), the host's root and /proc (Go reads somaxconn there).
	const maxExposure = 1.4
	dir := t.TempDir()
	p := filepath.Join(dir, "dicomedge.service")
	_ = os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/dicomedge", bin)), 0o644)
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for dicomedge.service: ([0-9.]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("systemd-analyze security %s: %v, no exposure level:\n%s", unitFile, err, out)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
	if level, _ := strconv.ParseFloat(m[1], 64); level > maxExposure {
		var open []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "✗") {
				open = append(open, l)
			}
		}
		t.Errorf("%s: exposure %s, more than %.1f:\n%s", unitFile, m[1], maxExposure, strings.Join(open, "\n"))
	}
}

// contrib/dicomedge-alerts.yml is valid for promtool, and each alert fires
// on its situation and not on a healthy edge (testdata/alerts_test.yml).
func TestAlertRules(t *testing.T) {
	testpeer.Require(t, "promtool")
	if out, err := exec.Command("promtool", "check", "rules", alertsFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command("promtool", "test", "rules", "alerts_test.yml")
	cmd.Dir = "testdata"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// Every metric the alert rules use is exported by a running edge: an alert
// on a metric that does not exist never fires.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	src, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range regexp.MustCompile(`\bdicomedge_[a-z0-9_]+`).FindAllString(string(src), -1) {
		names[n] = true
	}
	if len(names) < 6 {
		t.Fatalf("only %d metric names in %s: %v", len(names), alertsFile, names)
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	if out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), bin, "certs", "init", "--dir", filepath.Join(dir, "certs")); err != nil {
		t.Fatalf("certs init: %v\n%s", err, out)
	}
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	config := filepath.Join(dir, "policy.hcl")
	// A store-and-forward rule, so that the spool's and forwarders'
	// metrics are exported too (its backend need not be up).
	sf := fmt.Sprintf(`backend "pacs" {
  address  = %q
  ae_title = "PACS"
}
rule "sf" {
  when { called_ae = ["PACS"] }
  relay {
    backend           = "pacs"
    store_and_forward = true
  }
}`, testpeer.FreeAddr(t))
	if err := os.WriteFile(config, []byte(servePolicy(listen, admin, sf)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testpeer.Start(t, bin, "serve", "--config", config)
	testpeer.WaitListening(t, admin, 30*time.Second, p)
	// The client certificate metrics have a series once a client was seen.
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs", "client.pem"), filepath.Join(dir, "certs", "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen,
		&tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true}) // the edge's certificate is not what is tested
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	// TLS 1.3: the edge judges the client's certificate after the client's
	// handshake ends; the first read waits for that.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = c.Read(make([]byte, 1))
	c.Close()
	code, body := httpGetQuiet("http://" + admin + "/metrics")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(body, "dicomedge_client_cert_expiry_seconds{") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		code, body = httpGetQuiet("http://" + admin + "/metrics")
	}
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	var missing []string
	for n := range names {
		if !strings.Contains(body, "\n# TYPE "+n+" ") {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%s uses metrics /metrics does not export: %v", alertsFile, missing)
	}
}
