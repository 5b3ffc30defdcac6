package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// When the audit trail cannot be written the edge used to drop
// the records, export nothing and stay ready. With the audit file on
// /dev/full (every write fails with ENOSPC), /readyz must answer 503 and
// dicomedge_audit_write_errors_total must count the failures.
func TestAuditWriteFailureNotReady(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	e := startEdge(t, edgeOptions{AdminListen: true, Prepare: func(dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "audit"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/dev/full", filepath.Join(dir, "audit", "audit.jsonl")); err != nil {
			t.Fatal(err)
		}
	}})
	base := "http://" + e.Server.AdminAddr().String()
	if m := scrape(t, base+"/metrics"); m["dicomedge_audit_write_errors_total"] != 0 {
		t.Fatalf("write errors %v before any record", m["dicomedge_audit_write_errors_total"])
	} else if _, ok := m["dicomedge_audit_write_errors_total"]; !ok {
		t.Fatal("dicomedge_audit_write_errors_total missing")
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s before any record", code, body)
	}

	// One association makes audit records, whose write fails.
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
	deadline := time.Now().Add(10 * time.Second)
	code, body := get(t, base+"/readyz")
	for code == 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		code, body = get(t, base+"/readyz")
	}
	if code != 503 {
		t.Fatalf("/readyz = %d %s while the audit file refuses every write, want 503", code, body)
	}
	if m := scrape(t, base+"/metrics"); m["dicomedge_audit_write_errors_total"] < 1 {
		t.Errorf("dicomedge_audit_write_errors_total = %v, want at least 1", m["dicomedge_audit_write_errors_total"])
	}
}
