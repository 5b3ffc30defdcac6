package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// SIGHUP to the running binary, with the policy file changing and the
// edge's certificate rotated, during 1,000 associations: every association
// is served and audited with its end, each reload is audited, and the
// process holds no more descriptors afterwards than before.
func TestSIGHUPDuringAssociations(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "policy.hcl")
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	extra := "rule \"echo2\" {\n  when { called_ae = [\"OTHEREDGE\"] }\n  answer {}\n}\n"
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testpeer.Start(t, bin, "serve", "--dev", "--config", cfgFile)
	testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
	certs := filepath.Join(dir, "certs")
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "client.pem"), filepath.Join(certs, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tcfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost"}
	edgeCert, _ := os.ReadFile(filepath.Join(certs, "edge.pem"))
	edgeKey, _ := os.ReadFile(filepath.Join(certs, "edge-key.pem"))

	one := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen, tcfg)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		rq := &association.AssociateRQ{ProtocolVersion: 1, CallingAE: "MODALITY1", CalledAE: "DICOMEDGE",
			ApplicationContext: association.DICOMApplicationContext,
			PresentationContexts: []association.PresentationContextRQ{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
				TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}},
			UserInfo: association.UserInfo{MaxLength: 16384, HasMaxLength: true, ImplementationClassUID: "1.2.3.4"}}
		if err := association.WritePDU(c, rq); err != nil {
			return err
		}
		rd := association.NewReader(c, 1<<20)
		pdu, err := rd.ReadPDU()
		if err != nil {
			return fmt.Errorf("waiting for A-ASSOCIATE-AC: %w", err)
		}
		if _, ok := pdu.(*association.AssociateAC); !ok {
			return fmt.Errorf("got %T, want A-ASSOCIATE-AC", pdu)
		}
		if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
			return err
		}
		_, err = rd.ReadPDU()
		return err
	}
	if err := one(); err != nil {
		t.Fatalf("before the run: %v", err)
	}
	fdsBefore := procFDs(t, p)

	n := int32(1000)
	if raceEnabled {
		n = 300
	}
	var next, failed atomic.Int32
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for next.Add(1) <= n {
				if err := one(); err != nil {
					if failed.Add(1) <= 5 {
						t.Logf("association during SIGHUPs: %v", err)
					}
				}
			}
		})
	}
	hups := 0
	for i := 0; next.Load() < n; i++ {
		src := servePolicy(listen, admin, "")
		if i%2 == 1 {
			src = servePolicy(listen, admin, extra)
		}
		if err := os.WriteFile(cfgFile+".tmp", []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfgFile+".tmp", cfgFile); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 { // the same certificate and key written anew: a rotation as a deployment does it
			for name, b := range map[string][]byte{"edge-key.pem": edgeKey, "edge.pem": edgeCert} {
				if err := os.WriteFile(filepath.Join(certs, name+".tmp"), b, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(certs, name+".tmp"), filepath.Join(certs, name)); err != nil {
					t.Fatal(err)
				}
			}
		}
		_ = p.Cmd.Process.Signal(syscall.SIGHUP)
		hups++
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d associations failed during %d SIGHUPs", failed.Load(), n, hups)
	}
	auditFile := filepath.Join(dir, "audit", "audit.jsonl")
	waitAudit(t, auditFile, "association.released", int(n)+1)
	var fdsAfter int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if fdsAfter = procFDs(t, p); fdsAfter <= fdsBefore || time.Now().After(deadline) {
			break
		}
	}
	if fdsAfter > fdsBefore {
		t.Errorf("serve holds %d descriptors after the run, %d before", fdsAfter, fdsBefore)
	}
	reloaded := 0
	for _, ev := range auditEvents(t, auditFile) {
		if ev == "policy.reloaded" {
			reloaded++
		}
	}
	t.Logf("%d associations, %d SIGHUPs, %d policy.reloaded records; serve's descriptors %d before, %d after",
		n, hups, reloaded, fdsBefore, fdsAfter)
	if reloaded == 0 {
		t.Error("no policy.reloaded record")
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	<-p.Done()
	if code := testpeer.ExitCode(p.Err()); code != 0 || strings.Contains(p.Output(), "panic") {
		t.Errorf("serve exit %d after SIGTERM\n%s", code, p.Output())
	}
}

// procFDs counts the open descriptors of the serve process.
func procFDs(t *testing.T, p *testpeer.Process) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
