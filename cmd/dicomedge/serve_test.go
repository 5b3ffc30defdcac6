package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

var build struct {
	once     sync.Once
	dir, bin string
	err      error
	out      []byte
}

// buildBinary builds dicomedge once per test process (TestMain removes it):
// the serve and acceptance tests run the same binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		if build.dir, build.err = os.MkdirTemp("", "dicomedge-bin-"); build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "dicomedge")
		build.out, build.err = exec.Command("go", "build", "-o", build.bin, ".").CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build: %v\n%s", build.err, build.out)
	}
	return build.bin
}

func TestMain(m *testing.M) {
	// The bundled policy.hcl names a deidentify key in its ignored run
	// directory; tests that check or run it need the key, as a fresh
	// checkout gets it from serve --dev.
	if _, err := policy.CreateDevKeys(filepath.Join("..", "..", "policy.hcl")); err != nil {
		fmt.Fprintln(os.Stderr, "creating the bundled policy's deidentify key:", err)
		os.Exit(1)
	}
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

func servePolicy(listen, admin, extraRule string) string {
	return fmt.Sprintf(`
edge {
  ae_title      = "DICOMEDGE"
  listen        = %q
  admin_listen  = %q
  # ARTIM also bounds the TLS handshake: 5s was overrun when a loaded
  # machine stalled the whole process for 4s mid-handshake.
  artim_timeout = "20s"
  drain_timeout = "2s"
}
tls {
  client_ca = ["certs/ca.pem"]
  cert_file = "certs/edge.pem"
  key_file  = "certs/edge-key.pem"
}
audit {
  file  = "audit/audit.jsonl"
  fsync = "50ms"
}
%s
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
`, listen, admin, extraRule)
}

func auditEvents(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			out = append(out, ev.Event)
		}
	}
	return out
}

func waitAudit(t *testing.T, file, event string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c := 0
		for _, e := range auditEvents(t, file) {
			if e == event {
				c++
			}
		}
		if c >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("audit has no %d× %s: %v", n, event, auditEvents(t, file))
}

// serve --dev end to end as an operator runs it: development PKI created,
// echoscu +tls answered, /readyz, SIGHUP with a broken then a good policy,
// SIGTERM → exit 0; and an invalid configuration → exit 2.
func TestServeCommand(t *testing.T) {
	testpeer.Require(t, "echoscu")
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "policy.hcl")
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, "")), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("invalid config exits 2 with positions", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.hcl")
		if err := os.WriteFile(bad, []byte("edge {\n  max_associations = \"many\"\n}\nrule \"x\" {}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "serve", "--config", bad).CombinedOutput()
		if code := testpeer.ExitCode(err); code != 2 {
			t.Fatalf("exit %d, want 2\n%s", code, out)
		}
		if !strings.Contains(string(out), "bad.hcl:2:") {
			t.Errorf("diagnostics lack file:line:col:\n%s", out)
		}
	})

	t.Run("missing certificates exit 1 with a hint", func(t *testing.T) {
		out, err := exec.Command(bin, "serve", "--config", cfgFile).CombinedOutput()
		if code := testpeer.ExitCode(err); code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		if s := string(out); !strings.Contains(s, "certs/ca.pem") || !strings.Contains(s, "certs init") || strings.Contains(s, "tls: tls:") {
			t.Errorf("want the missing file named once under tls: and a certs init hint:\n%s", s)
		}
	})

	p := testpeer.Start(t, bin, "serve", "--dev", "--config", cfgFile, "--log-level", "debug", "--log-format", "json")
	testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
	for _, f := range []string{"ca.pem", "edge.pem", "edge-key.pem", "client.pem", "client-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "certs", f)); err != nil {
			t.Errorf("--dev did not create certs/%s: %v", f, err)
		}
	}
	certs := filepath.Join(dir, "certs")
	echo := func(called string) (string, error) {
		ctx := testpeer.Context(t, time.Minute)
		return testpeer.Run(ctx, "echoscu", "+tls", filepath.Join(certs, "client-key.pem"), filepath.Join(certs, "client.pem"),
			"+cf", filepath.Join(certs, "ca.pem"), "-aet", "MODALITY1", "-aec", called, testpeer.Host(listen), fmt.Sprint(testpeer.Port(listen)))
	}
	if out, err := echo("DICOMEDGE"); err != nil {
		t.Fatalf("echoscu +tls against serve --dev: %v\n%s", err, out)
	}
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz = %d", resp.StatusCode)
	}
	auditFile := filepath.Join(dir, "audit", "audit.jsonl")
	waitAudit(t, auditFile, "association.released", 1)

	// SIGHUP with a broken policy: refused, the old policy stays.
	if err := os.WriteFile(cfgFile, []byte("rule {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	waitAudit(t, auditFile, "policy.reload_failed", 1)
	if out, err := echo("DICOMEDGE"); err != nil {
		t.Fatalf("echo after a refused reload: %v\n%s", err, out)
	}
	// SIGHUP with a good policy that answers a second AE title.
	extra := "rule \"echo2\" {\n  when { called_ae = [\"OTHEREDGE\"] }\n  answer {}\n}\n"
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := echo("OTHEREDGE"); err == nil {
		t.Fatalf("OTHEREDGE answered before the reload:\n%s", out)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	waitAudit(t, auditFile, "policy.reloaded", 1)
	if out, err := echo("OTHEREDGE"); err != nil {
		t.Fatalf("OTHEREDGE after the reload: %v\n%s", err, out)
	}

	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if code := testpeer.ExitCode(p.Err()); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0\n%s", code, p.Output())
	}
	// JSON logs: one object per line, one info line per association.
	var assocLines int
	for _, line := range strings.Split(strings.TrimSpace(p.Output()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("--log-format json printed a non-JSON line: %q", line)
			continue
		}
		if m["@message"] == "association ended" {
			assocLines++
		}
	}
	if assocLines < 3 {
		t.Errorf("%d association log lines, want one per association\n%s", assocLines, p.Output())
	}
}

// serve binds listener blocks, and SIGHUP applies them: a plain inside
// listener answers the PACS, moves to a new address, then goes away.
func TestServeListenersAndSIGHUP(t *testing.T) {
	testpeer.Require(t, "echoscu")
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "policy.hcl")
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	inside := func(addr string) string {
		return fmt.Sprintf(`
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
rule "pacs-echo" {
  when {
    listener   = ["inside"]
    calling_ae = ["PACS"]
  }
  answer {}
}
`, addr)
	}
	first, second := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, inside(first))), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testpeer.Start(t, bin, "serve", "--dev", "--config", cfgFile)
	testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
	testpeer.WaitListening(t, first, testpeer.StartupTimeout, p)
	echo := func(addr string) (string, error) {
		ctx := testpeer.Context(t, time.Minute)
		return testpeer.Run(ctx, "echoscu", "-aet", "PACS", "-aec", "DICOMEDGE", testpeer.Host(addr), fmt.Sprint(testpeer.Port(addr)))
	}
	if out, err := echo(first); err != nil {
		t.Fatalf("plain echoscu on the inside listener: %v\n%s\n%s", err, out, p.Output())
	}
	auditFile := filepath.Join(dir, "audit", "audit.jsonl")

	// Moved.
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, inside(second))), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	waitAudit(t, auditFile, "policy.reloaded", 1)
	testpeer.WaitListening(t, second, testpeer.StartupTimeout, p)
	if out, err := echo(second); err != nil {
		t.Fatalf("echoscu on the moved listener: %v\n%s\n%s", err, out, p.Output())
	}
	if out, err := echo(first); err == nil {
		t.Errorf("the old address still answers after the move:\n%s", out)
	}

	// Removed.
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	waitAudit(t, auditFile, "policy.reloaded", 2)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := echo(second)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removed listener still answers:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	reloads := 0
	for _, line := range strings.Split(string(mustReadFile(t, auditFile)), "\n") {
		if strings.Contains(line, `"policy.reloaded"`) && (strings.Contains(line, `listener \"inside\" moved`) || strings.Contains(line, `listener \"inside\" removed`)) {
			reloads++
		}
	}
	if reloads != 2 {
		t.Errorf("%d policy.reloaded records say what happened to the listener, want 2", reloads)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if code := testpeer.ExitCode(p.Err()); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0\n%s", code, p.Output())
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
