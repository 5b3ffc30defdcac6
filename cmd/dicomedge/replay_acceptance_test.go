package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// TestPolicyReplayRealTraffic makes an audit log the real way: DCMTK
// echoscu and storescu over TLS through a running edge (the built binary)
// under policy v1, relaying to storescp. Then it replays that log: under v1
// nothing changes; under a v2 where one rule lost C-STORE, exactly the
// C-STORE requests of the associations that rule decided are listed; under
// a v3 where only the deny rule changed, exactly the associations it
// rejected; under a v4 where a relay rule rejects, exactly the association
// it relayed.
func TestPolicyReplayRealTraffic(t *testing.T) {
	testpeer.Require(t, "echoscu", "storescu", "storescp")
	bin := buildBinary(t)
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if code, out, errOut := policyRun(t, "certs", "init", "--dir", certs, "--client", "client", "--client", "ws"); code != 0 {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errOut)
	}
	pacs := testpeer.StartStoreSCP(t, "REALPACS")
	listen, admin, inside := testpeer.FreeAddr(t), testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	v1 := fmt.Sprintf(`edge {
  listen        = %q
  admin_listen  = %q
  artim_timeout = "5s"
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
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.0/8"]
}
backend "pacs" {
  address  = %q
  ae_title = "REALPACS"
}
rule "inside-store" {
  when {
    listener   = ["inside"]
    calling_ae = ["ARCHIVER"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
rule "modalities" {
  when {
    client_cn  = ["client"]
    calling_ae = ["MOD*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
rule "workstations" {
  when {
    client_cn = ["ws"]
    called_ae = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
`, listen, admin, inside, pacs.Addr)
	write := func(name, src string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	edit := func(src, old, new string) string {
		t.Helper()
		if strings.Count(src, old) != 1 {
			t.Fatalf("policy v1 does not hold %q once", old)
		}
		return strings.Replace(src, old, new, 1)
	}
	v1File := write("v1.hcl", v1)
	// v2: one rule changed, "modalities" loses C-STORE.
	v2File := write("v2.hcl", edit(v1, `    calling_ae = ["MOD*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]`, `    calling_ae = ["MOD*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO"]`))
	// v3: one rule changed, "deny" rejects transiently.
	v3File := write("v3.hcl", edit(v1, `reject { reason = "calling-ae-not-recognized" }`, `reject {
    reason    = "calling-ae-not-recognized"
    transient = true
  }`))

	// v4: one rule changed, "workstations" rejects instead of relaying.
	v4File := write("v4.hcl", edit(v1, `    client_cn = ["ws"]
    called_ae = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }`, `    client_cn = ["ws"]
    called_ae = ["MAINPACS"]
  }
  reject { reason = "called-ae-not-recognized" }`))

	// v5: the inside listener and its rule removed: its records cannot be
	// decided again and are reported, not guessed.
	v5 := edit(v1, fmt.Sprintf(`listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.0/8"]
}
`, inside), "")
	v5File := write("v5.hcl", edit(v5, `rule "inside-store" {
  when {
    listener   = ["inside"]
    calling_ae = ["ARCHIVER"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
`, ""))

	edge := testpeer.Start(t, bin, "serve", "--config", v1File)
	testpeer.WaitListening(t, listen, 30*time.Second, edge)
	testpeer.WaitListening(t, inside, 10*time.Second, edge)
	files, _ := testpeer.WriteDICOMFiles(t, filepath.Join(dir, "images"), "PAT-REPLAY", 2, 32, 32)
	tlsFor := func(client string) []string {
		return []string{"+tls", filepath.Join(certs, client+"-key.pem"), filepath.Join(certs, client+".pem"), "+cf", filepath.Join(certs, "ca.pem")}
	}
	type assoc struct {
		tool, client, calling, called string
		files                         []string
		ok                            bool // accepted
	}
	traffic := []assoc{
		{"echoscu", "client", "MOD1", "DICOMEDGE", nil, true},       // echo: answer
		{"storescu", "client", "MOD1", "MAINPACS", files, true},     // modalities: two C-STOREs
		{"storescu", "client", "MOD2", "MAINPACS", files[:1], true}, // modalities: one C-STORE
		{"storescu", "ws", "WS1", "MAINPACS", files[:1], true},      // workstations: one C-STORE
		{"echoscu", "client", "OTHER", "MAINPACS", nil, false},      // deny
		{"echoscu", "ws", "WS1", "DICOMEDGE", nil, false},           // deny
	}
	// The inside listener speaks plain DICOM: no certificate, the address is the client.
	if out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), "storescu", "-aet", "ARCHIVER", "-aec", "MAINPACS",
		testpeer.Host(inside), fmt.Sprint(testpeer.Port(inside)), files[1]); err != nil {
		t.Fatalf("storescu on the inside listener: %v\n%s", err, out)
	}
	for _, a := range traffic {
		args := append(tlsFor(a.client), "-aet", a.calling, "-aec", a.called, testpeer.Host(listen), fmt.Sprint(testpeer.Port(listen)))
		out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), a.tool, append(args, a.files...)...)
		if (err == nil) != a.ok {
			t.Fatalf("%s %s→%s as %s: err %v, want accepted=%v\n%s", a.tool, a.calling, a.called, a.client, err, a.ok, out)
		}
	}
	if pacs.Count() != 2 { // four C-STOREs of two distinct instances
		t.Errorf("storescp stored %d files, want 2", pacs.Count())
	}
	// SIGINT: the edge drains and syncs the log before it exits.
	_ = edge.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-edge.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	auditFile := filepath.Join(dir, "audit", "audit.jsonl")
	if n := len(recordsOf(t, auditFile, "dimse")); n != 6 {
		t.Fatalf("the log holds %d dimse records, want 6 (1 C-ECHO, 5 C-STORE)", n)
	}

	replay := func(config string, extra ...string) (int, []string, string) {
		t.Helper()
		code, out, errOut := policyRun(t, append([]string{"policy", "replay", "--config", config, "--audit", auditFile}, extra...)...)
		lines := nonEmpty(out)
		if len(lines) == 0 {
			t.Fatalf("replay printed nothing; stderr:\n%s", errOut)
		}
		return code, lines, errOut
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  `)
	changes := func(lines []string) []string {
		var out []string
		for _, l := range lines[:len(lines)-1] {
			if !stamp.MatchString(l) {
				t.Errorf("change line without a timestamp: %q", l)
			}
			out = append(out, stamp.ReplaceAllString(l, ""))
		}
		return out
	}

	code, lines, errOut := replay(v1File, "--exit-code")
	if code != 0 || len(lines) != 1 || lines[0] != "7 associations replayed, 0 would change" {
		t.Errorf("replay under v1: exit %d\n%s\n%s", code, strings.Join(lines, "\n"), errOut)
	}

	// expectChanges replays under config and wants exactly the change lines
	// of want (timestamps stripped) followed by its summary line.
	expectChanges := func(name, config string, wantCode int, want []string, extra ...string) {
		t.Helper()
		code, lines, errOut := replay(config, extra...)
		t.Logf("replay under %s:\n%s", name, strings.Join(lines, "\n"))
		if code != wantCode || strings.Join(append(changes(lines), lines[len(lines)-1]), "\n") != strings.Join(want, "\n") {
			t.Errorf("replay under %s: exit %d (want %d)\n got:\n%s\nwant:\n%s\n%s", name, code, wantCode, strings.Join(lines, "\n"), strings.Join(want, "\n"), errOut)
		}
	}

	expectChanges("v2 (modalities without C-STORE)", v2File, 1, []string{
		`client 127.0.0.1  MOD1→MAINPACS  C-STORE 1.2.840.10008.5.1.4.1.1.7: allowed → refused (service not allowed by rule "modalities")`,
		`client 127.0.0.1  MOD1→MAINPACS  C-STORE 1.2.840.10008.5.1.4.1.1.7: allowed → refused (service not allowed by rule "modalities")`,
		`client 127.0.0.1  MOD2→MAINPACS  C-STORE 1.2.840.10008.5.1.4.1.1.7: allowed → refused (service not allowed by rule "modalities")`,
		"7 associations replayed, 2 would change",
	}, "--exit-code")

	expectChanges("v4 (workstations rejected)", v4File, 0, []string{
		`ws 127.0.0.1  WS1→MAINPACS  relay pacs by rule "workstations" → reject called-ae-not-recognized by rule "workstations"`,
		"7 associations replayed, 1 would change",
	})

	code, lines, errOut = replay(v5File)
	t.Logf("replay under v5 (no inside listener):\n%s", strings.Join(lines, "\n"))
	want := []string{
		`127.0.0.1  ARCHIVER→MAINPACS on inside  not replayed: listener "inside" is not in the policy`,
		"6 associations replayed, 0 would change",
		"1 association record not replayed (listed above)",
	}
	if code != 0 || len(lines) != 3 || stamp.ReplaceAllString(lines[0], "")+"\n"+lines[1]+"\n"+lines[2] != strings.Join(want, "\n") {
		t.Errorf("replay under v5: exit %d\n got:\n%s\nwant:\n%s\n%s", code, strings.Join(lines, "\n"), strings.Join(want, "\n"), errOut)
	}

	// Exit 0: no --exit-code.
	expectChanges("v3 (deny transient)", v3File, 0, []string{
		`client 127.0.0.1  OTHER→MAINPACS  reject calling-ae-not-recognized by rule "deny" → reject calling-ae-not-recognized (transient) by rule "deny"`,
		`ws 127.0.0.1  WS1→DICOMEDGE  reject calling-ae-not-recognized by rule "deny" → reject calling-ae-not-recognized (transient) by rule "deny"`,
		"7 associations replayed, 2 would change",
	})
}
