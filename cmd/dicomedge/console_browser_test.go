package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/console/password"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// consoleScreenshot, when set, also writes the overview's screenshot to
// docs/console-overview.png (the README's picture of the console).
var consoleScreenshot = flag.Bool("console-screenshot", false, "write docs/console-overview.png from the browser test")

// consoleEdge is a served edge (the built binary) with its console, the
// traffic the browser test looks at, and one association held open.
type consoleEdge struct {
	bin, dir, admin, listen   string
	auditFile                 string
	ca, clientCert, clientKey string
	evilCN                    string
}

// evilCN carries a right-to-left override (U+202E) and a C1 control
// (U+0085, NEXT LINE): shown raw, "evil‮gnp.exe" reads as "evilexe.png".
const evilCN = "evil\u202egnp.exe\u0085x"

func startConsoleEdge(t *testing.T) *consoleEdge {
	t.Helper()
	testpeer.Require(t, "echoscu", "openssl")
	e := &consoleEdge{bin: buildBinary(t), dir: t.TempDir(), evilCN: evilCN}
	pki := testpeer.NewPKI(t, "console-ca")
	e.ca = pki.CACert
	edgeCert, edgeKey := pki.Issue(t, "edge", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	now := time.Now()
	e.clientCert, e.clientKey = pki.Issue(t, "client", testpeer.CertOptions{CN: "client", NotAfter: now.Add(400 * 24 * time.Hour)})
	expCert, expKey := pki.Issue(t, "expiring", testpeer.CertOptions{CN: "ct-expiring.clinic-b.example.org", NotAfter: now.Add(5 * 24 * time.Hour)})
	evilCert, evilKey := pki.Issue(t, "evil", testpeer.CertOptions{Subject: "/O=dicomedge tests/CN=" + evilCN, NotAfter: now.Add(200 * 24 * time.Hour)})

	hash := func(pw string) string {
		h, err := password.Hash(pw)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	e.listen, e.admin = testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	src := fmt.Sprintf(`
edge {
  ae_title      = "DICOMEDGE"
  listen        = %q
  admin_listen  = %q
  artim_timeout = "20s"
  drain_timeout = "2s"
}
tls {
  client_ca = [%q]
  cert_file = %q
  key_file  = %q
}
audit {
  file  = "audit/audit.jsonl"
  fsync = "50ms"
}
rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}
rule "never-used" {
  when { calling_ae = ["RETIRED"] }
  answer {}
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
admin {
  console {
    user "op" {
      password_hash = %q
      role          = "operator"
    }
    user "viewer" {
      password_hash = %q
    }
  }
}
`, e.listen, e.admin, pki.CACert, edgeCert, edgeKey, hash("op-password"), hash("viewer-password"))
	config := filepath.Join(e.dir, "policy.hcl")
	if err := os.WriteFile(config, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	e.auditFile = filepath.Join(e.dir, "audit", "audit.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, e.bin, "serve", "--config", config)
	cmd.Dir = e.dir
	var logs testpeer.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("edge output:\n%s", logs.String())
		}
	})
	waitFor(t, "the admin listener", func() bool {
		code, _ := httpGetQuiet("http://" + e.admin + "/healthz")
		return code == 200
	})
	waitFor(t, "the DICOM listener", func() bool {
		c, err := net.DialTimeout("tcp", e.listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	echo := func(cert, key, calling, called string, wantOK bool) {
		t.Helper()
		args := []string{"+tls", key, cert, "+cf", pki.CACert, "-aet", calling, "-aec", called,
			testpeer.Host(e.listen), strconv.Itoa(testpeer.Port(e.listen))}
		c := exec.Command("echoscu", args...)
		c.Env = append(os.Environ(), "TCP_NODELAY=1")
		out, err := c.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("echoscu %s→%s as %s: %v (want ok=%v)\n%s", calling, called, filepath.Base(cert), err, wantOK, out)
		}
	}
	for i := 0; i < 3; i++ {
		echo(e.clientCert, e.clientKey, "MODALITY1", "DICOMEDGE", true)
	}
	echo(e.clientCert, e.clientKey, "MODALITY1", "WRONGPACS", false)
	echo(e.clientCert, e.clientKey, "MODALITY2", "DICOMEDGE", true)
	echo(expCert, expKey, "CT_EXPIRING", "DICOMEDGE", true)
	echo(evilCert, evilKey, "EVIL1", "DICOMEDGE", true)
	return e
}

// holdAssociation opens an association through the edge with a Go client
// (mutual TLS, A-ASSOCIATE-RQ, the edge's AC) and keeps it open until the
// test ends.
func (e *consoleEdge) holdAssociation(t *testing.T, calling string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(e.clientCert, e.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(e.ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.listen,
		&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rq := &association.AssociateRQ{
		ProtocolVersion: 1, CallingAE: calling, CalledAE: "DICOMEDGE",
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextRQ{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}},
		UserInfo: association.UserInfo{MaxLength: 16384, HasMaxLength: true, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "GOTEST"},
	}
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := association.NewReader(c, 1<<20).ReadPDU()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("holding %s: got %T, want A-ASSOCIATE-AC", calling, p)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// cliSeqs runs `dicomedge audit --json` with args and returns the records'
// seqs (and events) in the CLI's order.
func (e *consoleEdge) cliRecords(t *testing.T, args ...string) (seqs []uint64, events []string) {
	seqs, events, _ = e.cliRecordsAt(t, args...)
	return seqs, events
}

// cliRecordsAt is cliRecords with each record's time as the table shows it.
func (e *consoleEdge) cliRecordsAt(t *testing.T, args ...string) (seqs []uint64, events, times []string) {
	t.Helper()
	cmd := exec.Command(e.bin, append([]string{"audit", "--file", e.auditFile, "--json"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("dicomedge audit %v: %v\n%s", args, err, errOut.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r struct {
			Seq   uint64    `json:"seq"`
			Event string    `json:"event"`
			Time  time.Time `json:"time"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit --json line %q: %v", sc.Text(), err)
		}
		seqs = append(seqs, r.Seq)
		events = append(events, r.Event)
		times = append(times, r.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	return seqs, events, times
}

// browser starts headless chromium (Debian's package, driven by chromedp).
func browser(t *testing.T) context.Context {
	t.Helper()
	testpeer.Require(t, "chromium")
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first action starts the browser, which lives as long as ctx.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// screenshot saves a full-page PNG of the current page in the test's
// output directory.
func screenshot(t *testing.T, ctx context.Context, name string) []byte {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	return png
}

// do runs browser steps with a bound; on failure it logs the page the
// browser shows and saves its screenshot.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
		if png, err := chromedp.Run(dctx, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(filepath.Join(t.ArtifactDir(), "failed.png"), png, 0o644)
		}
		t.Fatalf("%s: %v\nthe browser shows %s:\n%s", what, err, loc, html)
	}
}

// text is the visible text of the first element sel matches, waiting a
// bounded time for it.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// navigateTo loads u and waits until the browser is there and sel shows.
func navigateTo(t *testing.T, ctx context.Context, u, sel string) {
	t.Helper()
	do(t, ctx, "loading "+u, chromedp.Navigate(u), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// waitLocation waits (bounded) until the browser's URL contains part: a
// form's submission has loaded its answer.
func waitLocation(t *testing.T, ctx context.Context, part string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		loc, err := chromedp.Run(sctx, chromedp.Location())
		cancel()
		if err == nil && strings.Contains(loc, part) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser is at %s (%v), not at ...%s...", loc, err, part)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *consoleEdge) signIn(t *testing.T, ctx context.Context, user, pw string) {
	t.Helper()
	base := "http://" + e.admin
	do(t, ctx, "signing in as "+user,
		chromedp.Navigate(base+"/console/login"),
		chromedp.WaitVisible(chromedp.CSS(`#login`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), pw),
		chromedp.Click(chromedp.CSS(`#login button`)),
		chromedp.WaitVisible(chromedp.CSS(`#open`)),
	)
}

// TestConsoleInBrowser drives the console in headless chromium against a
// served edge: sign-in, the overview showing an association a Go client
// holds open, the audit page filtered by AE title agreeing with `dicomedge
// audit --calling-ae`, explain on a rejected association, a crafted CN shown
// escaped, an expiring certificate listed first. Each part saves a
// full-page screenshot in its output directory.
func TestConsoleInBrowser(t *testing.T) {
	e := startConsoleEdge(t)
	e.holdAssociation(t, "HOLDER")
	base := "http://" + e.admin
	// The index follows the log within 200 ms; the last record is written
	// within fsync (50 ms).
	var seqs []uint64
	waitFor(t, "the traffic's records", func() bool {
		seqs, _ = e.cliRecords(t)
		return len(seqs) >= 14 // 6 associations accepted and released, one rejected, the one held
	})
	ctx := browser(t)
	e.signIn(t, ctx, "op", "op-password")

	t.Run("overview shows the held association", func(t *testing.T) {
		var open string
		deadline := time.Now().Add(10 * time.Second)
		for {
			navigateTo(t, ctx, base+"/console/", `#open`)
			open = text(t, ctx, `#open`)
			if strings.Contains(open, "HOLDER") || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(open, "HOLDER") || !strings.Contains(open, "DICOMEDGE") || !strings.Contains(open, "client") || !strings.Contains(open, "echo") {
			t.Errorf("open associations %q: want HOLDER → DICOMEDGE by client, rule echo", open)
		}
		refusals := text(t, ctx, `#refusals`)
		if !strings.Contains(refusals, "WRONGPACS") || !strings.Contains(refusals, "calling-ae-not-recognized") {
			t.Errorf("last refusals %q: want the rejected MODALITY1 → WRONGPACS", refusals)
		}
		png := screenshot(t, ctx, "overview")
		if *consoleScreenshot {
			if err := os.WriteFile(filepath.Join("..", "..", "docs", "console-overview.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("audit filtered by calling AE is the CLI's selection", func(t *testing.T) {
		want, events, times := e.cliRecordsAt(t, "--calling-ae", "MODALITY1")
		if len(want) < 4 || !slices.Contains(events, "association.rejected") {
			t.Fatalf("the CLI selects %d records (%v): the traffic is not there", len(want), events)
		}
		slices.Reverse(want) // the page lists newest first
		slices.Reverse(events)
		slices.Reverse(times)
		navigateTo(t, ctx, base+"/console/audit", `form.filters`)
		do(t, ctx, "filtering the audit page",
			chromedp.SendKeys(chromedp.CSS(`input[name="calling_ae"]`), "MODALITY1"),
			chromedp.Click(chromedp.CSS(`form.filters button`)),
		)
		waitLocation(t, ctx, "calling_ae=MODALITY1")
		do(t, ctx, "the filtered records", chromedp.WaitVisible(chromedp.CSS(`#records`)))
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rows, err := chromedp.Run(actx, chromedp.AttributesAll(chromedp.CSSAll(`#records tbody tr`)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, r := range rows {
			n, _ := strconv.ParseUint(r["data-seq"], 10, 64)
			got = append(got, n)
		}
		if !slices.Equal(got, want) {
			t.Errorf("the audit page lists seqs %v; dicomedge audit --calling-ae MODALITY1 gives %v", got, want)
		}
		// Row by row, the time and event the CLI prints for each record.
		body := text(t, ctx, `#records tbody`)
		at := 0
		for i := range want {
			j := strings.Index(body[at:], times[i])
			k := strings.Index(body[at:], events[i])
			if j < 0 || k < j {
				t.Errorf("row %d: the page does not show %s %s in the CLI's order:\n%s", i, times[i], events[i], body)
				break
			}
			at += k + len(events[i])
		}
		summary := text(t, ctx, `#summary`)
		if !strings.HasPrefix(summary, fmt.Sprintf("%d records", len(want))) {
			t.Errorf("summary %q, want %d records", summary, len(want))
		}
		screenshot(t, ctx, "audit-calling-ae")
	})

	t.Run("explain on a rejected association names the deciding rule", func(t *testing.T) {
		seqs, _ := e.cliRecords(t, "--event", "association.rejected", "--calling-ae", "MODALITY1")
		if len(seqs) != 1 {
			t.Fatalf("rejected records: %v", seqs)
		}
		navigateTo(t, ctx, base+"/console/audit?calling_ae=MODALITY1", `#records`)
		do(t, ctx, "explaining the rejected association",
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-seq="%d"] a[href*="explain"]`, seqs[0]))))
		waitLocation(t, ctx, fmt.Sprintf("/console/audit/explain?seq=%d", seqs[0]))
		do(t, ctx, "the explanation", chromedp.WaitVisible(chromedp.CSS(`#deciding`)))
		deciding, now, steps := text(t, ctx, `#deciding`), text(t, ctx, `#now`), text(t, ctx, `#steps`)
		if strings.TrimSpace(deciding) != "deny" || !strings.Contains(now, "reject calling-ae-not-recognized") {
			t.Errorf("explain: deciding %q, now %q; want rule deny rejecting", deciding, now)
		}
		if !strings.Contains(steps, `rule "echo": called_ae "WRONGPACS" does not match`) {
			t.Errorf("explain's steps %q do not say why rule echo did not match", steps)
		}
		screenshot(t, ctx, "explain-rejected")
	})

	t.Run("clients: a crafted CN escaped, the expiring certificate first", func(t *testing.T) {
		navigateTo(t, ctx, base+"/console/clients", `#clients`)
		table := text(t, ctx, `#clients`)
		escaped := `evil\u202egnp.exe\u0085x`
		if !strings.Contains(table, escaped) {
			t.Errorf("the clients page does not show %s escaped as %q:\n%s", "the crafted CN", escaped, table)
		}
		if strings.ContainsAny(table, "\u202e\u0085") {
			t.Errorf("the clients page shows U+202E or U+0085 raw:\n%q", table)
		}
		first := text(t, ctx, `#clients tbody tr:first-child td.name`)
		if strings.TrimSpace(first) != "ct-expiring.clinic-b.example.org" {
			t.Errorf("first client %q: want the certificate expiring in 5 days first", first)
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cls, _ := chromedp.Run(actx, chromedp.AttributeValue(chromedp.CSS(`#clients tbody tr:first-child`), "class"))
		cancel()
		if cls.Value != "expiring" {
			t.Errorf("the expiring row's class %q: want it marked", cls.Value)
		}
		screenshot(t, ctx, "clients")
	})

	t.Run("rules and certificates", func(t *testing.T) {
		navigateTo(t, ctx, base+"/console/rules", `#rules`)
		rules := text(t, ctx, `#rules`)
		if !strings.Contains(rules, "never-used") || !strings.Contains(rules, "unused 30 days") {
			t.Errorf("rules page %q: rule never-used is not marked unused", rules)
		}
		screenshot(t, ctx, "rules")
		navigateTo(t, ctx, base+"/console/certificates", `#certificates`)
		certs := text(t, ctx, `#certificates`)
		if !strings.Contains(certs, "edge listener") || !strings.Contains(certs, "CN=localhost") {
			t.Errorf("certificates page %q lacks the edge's certificate", certs)
		}
		screenshot(t, ctx, "certificates")
	})
}
