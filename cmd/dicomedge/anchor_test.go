package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// The trail cannot be cut quietly while the edge is stopped: stop serve,
// cut the last 8 records, delete the head anchor, start it again. The edge
// logs an error, its first record is audit.anchor_mismatch saying what it
// found and expected, and audit verify fails naming that record (exit 1)
// unless --allow-missing-anchor.
func TestAuditCutWhileStopped(t *testing.T) {
	testpeer.Require(t, "echoscu")
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "policy.hcl")
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(dir, "audit", "audit.jsonl")
	certs := filepath.Join(dir, "certs")
	stop := func(p *testpeer.Process) {
		t.Helper()
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop after SIGTERM")
		}
	}

	p := testpeer.Start(t, bin, "serve", "--dev", "--config", cfgFile)
	testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
	for range 4 { // 3 records each: accepted, dimse, released
		ctx := testpeer.Context(t, time.Minute)
		if out, err := testpeer.Run(ctx, "echoscu", "+tls", filepath.Join(certs, "client-key.pem"), filepath.Join(certs, "client.pem"),
			"+cf", filepath.Join(certs, "ca.pem"), "-aet", "MODALITY1", "-aec", "DICOMEDGE", testpeer.Host(listen), fmt.Sprint(testpeer.Port(listen))); err != nil {
			t.Fatalf("echoscu: %v\n%s", err, out)
		}
	}
	waitAudit(t, auditFile, "association.released", 4)
	stop(p)
	if code, out, errOut := runAudit(t, "verify", "--file", auditFile); code != 0 {
		t.Fatalf("verify before the cut: exit %d %q %q", code, out, errOut)
	}

	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	lines = lines[:len(lines)-1]
	if len(lines) < 10 {
		t.Fatalf("only %d records before the cut", len(lines))
	}
	kept := len(lines) - 8
	if err := os.WriteFile(auditFile, bytes.Join(lines[:kept], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(auditFile + ".head"); err != nil {
		t.Fatal(err)
	}

	p = testpeer.Start(t, bin, "serve", "--config", cfgFile)
	testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
	waitAudit(t, auditFile, "audit.anchor_mismatch", 1)
	stop(p)
	if out := p.Output(); !strings.Contains(out, "[ERROR]") || !strings.Contains(out, "anchor") {
		t.Errorf("serve logged no error about the anchor:\n%s", out)
	}
	b, _ = os.ReadFile(auditFile)
	after := bytes.SplitAfter(b, []byte("\n"))
	if len(after) <= kept || !bytes.Contains(after[kept], []byte(`"event":"audit.anchor_mismatch"`)) ||
		!bytes.Contains(after[kept], []byte("found no head anchor")) || !bytes.Contains(after[kept], []byte("expected")) {
		t.Fatalf("record %d after the restart is not the anchor mismatch:\n%s", kept+1, b)
	}

	code, out, errOut := runAudit(t, "verify", "--file", auditFile)
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf("%s:%d:", auditFile, kept+1)) || !strings.Contains(errOut, "audit.anchor_mismatch") {
		t.Fatalf("verify after the cut: exit %d, stdout %q, stderr %q; want exit 1 naming line %d's audit.anchor_mismatch", code, out, errOut, kept+1)
	}
	if code, _, errOut := runAudit(t, "verify", "--file", auditFile, "--allow-missing-anchor"); code != 0 || !strings.Contains(errOut, "warning") {
		t.Fatalf("verify --allow-missing-anchor: exit %d, stderr %q; want 0 with a warning", code, errOut)
	}
}
