package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// testConsole is a console on an httptest server with a real audit writer.
type testConsole struct {
	*Console
	srv       *httptest.Server
	auditFile string
	aw        *audit.Writer
	reloads   atomic.Int32
	dir       string
}

func bcryptHash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// consolePolicy is a policy with an operator "op" (password "op-pw") and a
// viewer "viewer" (password "viewer-pw"), plus extra inside admin.console.
func consolePolicy(t testing.TB, dir, extra string) *policy.Config {
	t.Helper()
	src := `
edge { admin_listen = "127.0.0.1:0" }
tls {
  client_ca = ["certs/ca.pem"]
  cert_file = "certs/edge.pem"
  key_file  = "certs/edge-key.pem"
}
audit { file = "audit/audit.jsonl" }
rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
admin {
  console {
    ` + extra + `
    user "op" {
      password_hash = "` + bcryptHash(t, "op-pw") + `"
      role = "operator"
    }
    user "viewer" {
      password_hash = "` + bcryptHash(t, "viewer-pw") + `"
    }
  }
}
`
	cfg, diags := policy.Load(filepath.Join(dir, "policy.hcl"), []byte(src))
	if diags.HasErrors() {
		t.Fatalf("%v", diags)
	}
	return cfg
}

func startConsole(t testing.TB, cfg *policy.Config, live func() []proxy.OpenAssociation) *testConsole {
	t.Helper()
	aw, err := audit.Open(audit.Config{File: cfg.Audit.File, Fsync: 0})
	if err != nil {
		t.Fatal(err)
	}
	tc := &testConsole{auditFile: cfg.Audit.File, aw: aw, dir: filepath.Dir(cfg.Filename)}
	con, err := New(Options{Config: func() *policy.Config { return cfg }, AuditFile: cfg.Audit.File, Audit: aw, Live: live})
	if err != nil {
		t.Fatal(err)
	}
	tc.Console = con
	con.AddAction(Action{Name: "reload", Label: "Reload the policy", Run: func(context.Context, url.Values) (string, error) {
		tc.reloads.Add(1)
		return "reloaded", nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = con.Run(ctx); close(done) }()
	tc.srv = httptest.NewServer(con.Handler())
	t.Cleanup(func() {
		tc.srv.Close()
		cancel()
		<-done
		aw.Close()
	})
	return tc
}

// events returns the audit records of the given event written so far
// (waiting a little for the first, which the writer writes asynchronously).
func (tc *testConsole) events(t testing.TB, event string) []audit.Event {
	t.Helper()
	return tc.eventsN(t, event, 1)
}

// eventsN waits (bounded) until at least n records of event are written.
func (tc *testConsole) eventsN(t testing.TB, event string, n int) []audit.Event {
	t.Helper()
	var out []audit.Event
	deadline := time.Now().Add(5 * time.Second)
	for {
		out = out[:0]
		_ = audit.ReadFiles(audit.Files(tc.auditFile), audit.Filter{Event: event}, func(e audit.Event, _ []byte) error {
			out = append(out, e)
			return nil
		})
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func client(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t testing.TB, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login signs in and returns the session's CSRF token.
func (tc *testConsole) login(t testing.TB, c *http.Client, user, pw string) string {
	t.Helper()
	_, page := get(t, c, tc.srv.URL+"/console/login")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the login page:\n%s", page)
	}
	resp, body := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {pw}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login as %s: %d\n%s", user, resp.StatusCode, body)
	}
	_, page = get(t, c, tc.srv.URL+"/console/")
	m = csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the overview:\n%s", page)
	}
	return m[1]
}

// consoleURLs are every page and endpoint the console serves with data.
var consoleURLs = []string{"/console/", "/console/clients", "/console/rules", "/console/audit", "/console/audit?calling_ae=SECRETAE",
	"/console/audit/record?seq=1", "/console/audit/explain?seq=1", "/console/audit/export", "/console/certificates"}

// TestEveryURLNeedsSignIn: without a session every console URL answers 401
// with the login page (GET) or a bare 401 (POST), never data.
func TestEveryURLNeedsSignIn(t *testing.T) {
	dir := t.TempDir()
	cfg := consolePolicy(t, dir, "")
	tc := startConsole(t, cfg, func() []proxy.OpenAssociation {
		return []proxy.OpenAssociation{{CallingAE: "SECRETAE", CalledAE: "DICOMEDGE", Since: time.Now()}}
	})
	tc.aw.Log(audit.Event{Event: audit.EventRejected, CallingAE: "SECRETAE", CalledAE: "X", Remote: "192.0.2.7:4000"})
	for tc.Index().Len() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	c := client(t)
	for _, u := range consoleURLs {
		code, body := get(t, c, tc.srv.URL+u)
		if code != http.StatusUnauthorized || !strings.Contains(body, `id="login"`) {
			t.Errorf("GET %s: %d, want 401 with the login page", u, code)
		}
		if strings.Contains(body, "SECRETAE") || strings.Contains(body, "192.0.2.7") {
			t.Errorf("GET %s without a session shows data", u)
		}
	}
	for _, u := range []string{"/console/action/reload", "/console/logout"} {
		resp, body := post(t, c, tc.srv.URL+u, url.Values{"csrf": {"x"}})
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "SECRETAE") {
			t.Errorf("POST %s: %d, want 401", u, resp.StatusCode)
		}
	}
	// A forged cookie is no session.
	u, _ := url.Parse(tc.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: cookieName, Value: newToken()}})
	if code, _ := get(t, c, tc.srv.URL+"/console/"); code != http.StatusUnauthorized {
		t.Errorf("a made-up session cookie: %d", code)
	}
	if tc.reloads.Load() != 0 {
		t.Error("an action ran without a session")
	}
	// The admin endpoints beside the console are not the console's.
	if code, _ := get(t, c, tc.srv.URL+"/"); code != http.StatusUnauthorized && code != http.StatusSeeOther {
		t.Errorf("GET /: %d", code)
	}
}

// TestLoginSessionCookie: a password login is audited and sets a session
// cookie that scripts cannot read, is sent to this site only, and expires.
func TestLoginSessionCookie(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	c := client(t)
	_, page := get(t, c, tc.srv.URL+"/console/login")
	tok := csrfRE.FindStringSubmatch(page)[1]
	resp, _ := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {tok}, "user": {"op"}, "password": {"op-pw"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName && ck.Value != "" {
			sc = ck
		}
	}
	if sc == nil {
		t.Fatalf("no session cookie: %v", resp.Header["Set-Cookie"])
	}
	if !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.MaxAge <= 0 || sc.MaxAge > int(sessionMaxAge/time.Second) || sc.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, an expiry, and no Secure on plain HTTP", sc)
	}
	if code, body := get(t, c, tc.srv.URL+"/console/"); code != 200 || !strings.Contains(body, "Open associations") {
		t.Fatalf("overview after login: %d", code)
	}
	logins := tc.events(t, audit.EventConsoleLogin)
	if len(logins) != 1 || logins[0].User != "op" || logins[0].Remote == "" || !strings.Contains(logins[0].Detail, "operator") {
		t.Errorf("console.login records: %+v", logins)
	}
	// A wrong password is audited and refused.
	c2 := client(t)
	_, page = get(t, c2, tc.srv.URL+"/console/login")
	tok = csrfRE.FindStringSubmatch(page)[1]
	resp, _ = post(t, c2, tc.srv.URL+"/console/login", url.Values{"csrf": {tok}, "user": {"op\u202e"}, "password": {"nope"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", resp.StatusCode)
	}
	failed := tc.events(t, audit.EventConsoleLoginFailed)
	if len(failed) != 1 || failed[0].User != "op\u202e" {
		t.Errorf("console.login_failed records: %+v", failed)
	}
	// The headers of a page with records.
	resp, err := c.Get(tc.srv.URL + "/console/audit")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q allows script", csp)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	// Logging out ends the session.
	_, page = get(t, c, tc.srv.URL+"/console/")
	tok = csrfRE.FindStringSubmatch(page)[1]
	post(t, c, tc.srv.URL+"/console/logout", url.Values{"csrf": {tok}})
	if code, _ := get(t, c, tc.srv.URL+"/console/"); code != http.StatusUnauthorized {
		t.Errorf("after logout: %d", code)
	}
}

// TestPostNeedsCSRFToken: a signed-in operator's POST without the session's
// token (or with another's) is refused and nothing runs; so is a login
// without the login form's token.
func TestPostNeedsCSRFToken(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	c := client(t)
	tok := tc.login(t, c, "op", "op-pw")
	for _, form := range []url.Values{{}, {"csrf": {""}}, {"csrf": {newToken()}}, {"csrf": {tok[:len(tok)-1]}}} {
		resp, _ := post(t, c, tc.srv.URL+"/console/action/reload", form)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST reload with %v: %d, want 403", form, resp.StatusCode)
		}
	}
	// Another site's form, even with the token.
	req, _ := http.NewRequest("POST", tc.srv.URL+"/console/action/reload", strings.NewReader(url.Values{"csrf": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %v %v", resp, err)
	}
	if n := tc.reloads.Load(); n != 0 {
		t.Fatalf("the action ran %d times without a valid token", n)
	}
	resp, _ := post(t, c, tc.srv.URL+"/console/action/reload", url.Values{"csrf": {tok}})
	if resp.StatusCode != http.StatusOK || tc.reloads.Load() != 1 {
		t.Errorf("with the token: %d, %d reloads", resp.StatusCode, tc.reloads.Load())
	}
	// Five refusals (four tokens, one foreign origin), then the reload: the
	// writer is asynchronous.
	acts := tc.eventsN(t, audit.EventConsoleAction, 6)
	found := false
	for _, e := range acts {
		found = found || (e.User == "op" && e.Detail == "reload: ok: reloaded")
	}
	if !found {
		t.Errorf("the operator's reload is not audited: %+v", acts)
	}
	// Login without the form's token.
	c2 := client(t)
	resp, _ = post(t, c2, tc.srv.URL+"/console/login", url.Values{"user": {"op"}, "password": {"op-pw"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login without a token: %d", resp.StatusCode)
	}
}

// TestViewerCannotReload: a viewer's POST to reload (with a valid token) is
// refused with 403, does not run, and is audited.
func TestViewerCannotReload(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	c := client(t)
	tok := tc.login(t, c, "viewer", "viewer-pw")
	resp, body := post(t, c, tc.srv.URL+"/console/action/reload", url.Values{"csrf": {tok}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer reload: %d\n%s", resp.StatusCode, body)
	}
	if tc.reloads.Load() != 0 {
		t.Fatal("the viewer's reload ran")
	}
	acts := tc.events(t, audit.EventConsoleAction)
	if len(acts) != 1 || acts[0].User != "viewer" || acts[0].Detail != "reload: refused: role viewer" {
		t.Errorf("console.action records: %+v", acts)
	}
	// The viewer still reads every page.
	for _, u := range []string{"/console/", "/console/clients", "/console/rules", "/console/audit", "/console/certificates"} {
		if code, _ := get(t, c, tc.srv.URL+u); code != 200 {
			t.Errorf("viewer GET %s: %d", u, code)
		}
	}
}

// TestLoginRateLimited: after 5 attempts from one address the next are
// refused (429) before the password is even checked, the right one too, and
// the refusal is audited once per period, not per attempt.
func TestLoginRateLimited(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	c := client(t)
	attempt := func(pw string) int {
		_, page := get(t, c, tc.srv.URL+"/console/login")
		tok := csrfRE.FindStringSubmatch(page)[1]
		resp, _ := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {tok}, "user": {"op"}, "password": {pw}})
		return resp.StatusCode
	}
	for i := 0; i < loginBurst; i++ {
		if code := attempt("wrong"); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i+1, code)
		}
	}
	for i := 0; i < 5; i++ {
		if code := attempt("op-pw"); code != http.StatusTooManyRequests {
			t.Fatalf("attempt %d after the burst: %d, want 429", loginBurst+i+1, code)
		}
	}
	failed := tc.eventsN(t, audit.EventConsoleLoginFailed, loginBurst+1)
	limited := 0
	for _, e := range failed {
		if strings.HasPrefix(e.Detail, "rate limited") {
			limited++
		}
	}
	if len(failed)-limited != loginBurst || limited != 1 {
		t.Errorf("%d wrong-password and %d rate-limited records, want %d and 1", len(failed)-limited, limited, loginBurst)
	}
	if logins := tc.events(t, audit.EventConsoleLogin); len(logins) != 0 {
		t.Errorf("signed in while limited: %+v", logins)
	}
}

// TestLimiterRefills: the bucket refills with time, per source.
func TestLimiterRefills(t *testing.T) {
	var l limiter
	now := time.Now()
	for i := 0; i < loginBurst; i++ {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatal("burst refused")
		}
	}
	if ok, _ := l.allow("a", now); ok {
		t.Fatal("beyond the burst allowed")
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another source limited")
	}
	if ok, _ := l.allow("a", now.Add(loginRefill)); !ok {
		t.Fatal("not refilled")
	}
}

// TestCertificateLogin: over HTTPS (tlslayer's admin config) a browser with a
// certificate from admin.console.client_ca is signed in by it, with the role
// of the user block its CN names; one without sees the login page.
func TestCertificateLogin(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if _, err := tlslayer.InitDevPKI(certs, nil, []string{"op", "someone"}); err != nil {
		t.Fatal(err)
	}
	cfg := consolePolicy(t, dir, `client_ca = ["certs/ca.pem"]`)
	tlsCfg := adminTLS(t, cfg)
	aw, err := audit.Open(audit.Config{File: cfg.Audit.File})
	if err != nil {
		t.Fatal(err)
	}
	defer aw.Close()
	con, err := New(Options{Config: func() *policy.Config { return cfg }, AuditFile: cfg.Audit.File, Audit: aw, HTTPS: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, pool := serveTLS(t, con, tlsCfg, filepath.Join(certs, "ca.pem"))
	as := func(name string) *http.Client {
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if name != "" {
			pair, err := tls.LoadX509KeyPair(filepath.Join(certs, name+".pem"), filepath.Join(certs, name+"-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := client(t)
		c.Transport = &http.Transport{TLSClientConfig: cfg}
		return c
	}
	for _, tcase := range []struct{ cert, role string }{{"op", "operator"}, {"someone", "viewer"}} {
		code, body := get(t, as(tcase.cert), srv.URL+"/console/")
		if code != 200 || !strings.Contains(body, `role-`+tcase.role) {
			t.Errorf("certificate %s: %d, want the overview as %s", tcase.cert, code, tcase.role)
		}
	}
	if code, body := get(t, as(""), srv.URL+"/console/"); code != http.StatusUnauthorized || !strings.Contains(body, `id="login"`) {
		t.Errorf("no certificate: %d", code)
	}
	// One console.login per certificate, not per request.
	get(t, as("op"), srv.URL+"/console/clients")
	var logins []audit.Event
	deadline := time.Now().Add(5 * time.Second)
	for len(logins) < 2 && time.Now().Before(deadline) {
		logins = logins[:0]
		_ = audit.ReadFiles(audit.Files(cfg.Audit.File), audit.Filter{Event: audit.EventConsoleLogin}, func(e audit.Event, _ []byte) error {
			logins = append(logins, e)
			return nil
		})
		time.Sleep(20 * time.Millisecond)
	}
	if len(logins) != 2 || logins[0].Client == nil || logins[0].Client.CN != "op" || !strings.Contains(logins[0].Detail, "certificate") {
		t.Errorf("console.login records: %+v", logins)
	}
}

// startHTTP serves con's handler on a loopback test server and returns its URL.
func startHTTP(t testing.TB, con *Console) string {
	t.Helper()
	srv := httptest.NewServer(con.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPlainHTTPGoesToHTTPS: where the listener speaks HTTPS, a console
// request over plain HTTP from another host is sent there (a password or
// cookie never crosses the network in clear); from this host (a tunnel) it
// is served; the overview refreshes itself without script when asked.
func TestPlainHTTPGoesToHTTPS(t *testing.T) {
	cfg := consolePolicy(t, t.TempDir(), "")
	con, err := New(Options{Config: func() *policy.Config { return cfg }, AuditFile: cfg.Audit.File, HTTPS: true})
	if err != nil {
		t.Fatal(err)
	}
	h := con.Handler()
	req := httptest.NewRequest("GET", "http://edge.example.org:9102/console/login?x=1", nil)
	req.RemoteAddr = "192.0.2.10:5555"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != "https://edge.example.org:9102/console/login?x=1" {
		t.Errorf("plain HTTP from another host: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	req.RemoteAddr = "127.0.0.1:5555"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `id="login"`) {
		t.Errorf("plain HTTP from this host: %d", rec.Code)
	}

	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	c := client(t)
	tc.login(t, c, "viewer", "viewer-pw")
	_, body := get(t, c, tc.srv.URL+"/console/?refresh=1")
	if !strings.Contains(body, `<meta http-equiv="refresh" content="5">`) {
		t.Errorf("?refresh=1: no meta refresh bounded to 5 s")
	}
	if _, body := get(t, c, tc.srv.URL+"/console/"); strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("the overview refreshes without being asked")
	}
}

var exportHrefRE = regexp.MustCompile(`href="(/console/audit/export[^"]*)"`)

// TestExportLinkKeepsTheFilter: the audit page's export link exports the
// records the page lists, not the whole log: a reviewer who filtered on one
// client must not download every record (every Patient ID) by following it.
func TestExportLinkKeepsTheFilter(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	tc.aw.Log(audit.Event{Event: audit.EventRejected, CallingAE: "WANTED", CalledAE: "X", Remote: "192.0.2.7:4000"})
	tc.aw.Log(audit.Event{Event: audit.EventRejected, CallingAE: "OTHER", CalledAE: "X", Remote: "192.0.2.8:4000"})
	for tc.Index().Len() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	c := client(t)
	tc.login(t, c, "viewer", "viewer-pw")
	_, page := get(t, c, tc.srv.URL+"/console/audit?calling_ae=WANT*&event=association.rejected")
	m := exportHrefRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no export link:\n%s", page)
	}
	code, body := get(t, c, tc.srv.URL+html.UnescapeString(m[1]))
	if code != http.StatusOK || !strings.Contains(body, "WANTED") || strings.Contains(body, "OTHER") {
		t.Errorf("export link %q: %d, exports\n%s\nwant only the WANTED record", m[1], code, body)
	}
}

// TestReloadedRoleAppliesToCertificateSessions: a reload that takes the
// operator role from a certificate's CN applies at its next request, as it
// does for a password session: the certificate's session is not left an
// operator for up to 8 hours. Concurrent requests of one session see the
// role of the policy in force without racing on it.
func TestReloadedRoleAppliesToCertificateSessions(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if _, err := tlslayer.InitDevPKI(certs, nil, []string{"op"}); err != nil {
		t.Fatal(err)
	}
	before := consolePolicy(t, dir, `client_ca = ["certs/ca.pem"]`)
	after := consolePolicy(t, dir, `client_ca = ["certs/ca.pem"]`)
	for i := range after.Admin.Console.Users {
		after.Admin.Console.Users[i].Role = policy.RoleViewer
	}
	var cur atomic.Pointer[policy.Config]
	cur.Store(before)
	tlsCfg := adminTLS(t, before)
	var reloads atomic.Int32
	con, err := New(Options{Config: cur.Load, AuditFile: before.Audit.File, HTTPS: true})
	if err != nil {
		t.Fatal(err)
	}
	con.AddAction(Action{Name: "reload", Label: "Reload the policy", Run: func(context.Context, url.Values) (string, error) {
		reloads.Add(1)
		return "reloaded", nil
	}})
	srv, pool := serveTLS(t, con, tlsCfg, filepath.Join(certs, "ca.pem"))
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "op.pem"), filepath.Join(certs, "op-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c := client(t)
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}}}
	code, body := get(t, c, srv.URL+"/console/")
	if code != 200 || !strings.Contains(body, "role-operator") {
		t.Fatalf("certificate op before the reload: %d, want the overview as operator", code)
	}
	cur.Store(after)
	code, body = get(t, c, srv.URL+"/console/")
	if code != 200 || !strings.Contains(body, "role-viewer") {
		t.Errorf("certificate op after a reload made it a viewer: %d, still shown as %s", code, regexp.MustCompile(`role-\w+`).FindString(body))
	}
	tok := csrfRE.FindStringSubmatch(body)[1]
	resp, _ := post(t, c, srv.URL+"/console/action/reload", url.Values{"csrf": {tok}})
	if resp.StatusCode != http.StatusForbidden || reloads.Load() != 0 {
		t.Errorf("a demoted certificate's action: %d, %d runs; want 403 and none", resp.StatusCode, reloads.Load())
	}

	// A password session's requests at once, while the role changes.
	cur.Store(before)
	pc := client(t)
	pc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	_, page := get(t, pc, srv.URL+"/console/login")
	resp, _ = post(t, pc, srv.URL+"/console/login", url.Values{"csrf": {csrfRE.FindStringSubmatch(page)[1]}, "user": {"op"}, "password": {"op-pw"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("password login: %d", resp.StatusCode)
	}
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; j < 10; j++ {
				if r, err := pc.Get(srv.URL + "/console/rules"); err == nil {
					_, _ = io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
				if j%3 == 0 {
					cur.Store(after)
				} else {
					cur.Store(before)
				}
			}
		}()
	}
	for i := 0; i < 4; i++ {
		<-done
	}
}

// TestLoginLimitPerIPv6Prefix: the sign-in limit holds for a client that
// changes its IPv6 address within its /64 (one host or network usually has
// a whole /64 and may pick any address in it), so the burst is not 5
// attempts per address but 5 per source.
func TestLoginLimitPerIPv6Prefix(t *testing.T) {
	cfg := consolePolicy(t, t.TempDir(), "")
	con, err := New(Options{Config: func() *policy.Config { return cfg }, AuditFile: cfg.Audit.File})
	if err != nil {
		t.Fatal(err)
	}
	h := con.Handler()
	attempt := func(remote string) int {
		tok := newToken()
		req := httptest.NewRequest("POST", "http://edge.example.org:9102/console/login",
			strings.NewReader(url.Values{"csrf": {tok}, "user": {"op"}, "password": {"wrong"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: loginCSRFName, Value: tok})
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := 0; i < loginBurst; i++ {
		if code := attempt(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1)); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i+1, code)
		}
	}
	if code := attempt("[2001:db8:1:2:dead:beef:0:1]:4000"); code != http.StatusTooManyRequests {
		t.Errorf("another address of the same /64 after the burst: %d, want 429", code)
	}
	if code := attempt("[2001:db8:1:3::1]:4000"); code != http.StatusUnauthorized {
		t.Errorf("another /64: %d, want 401", code)
	}
}

// TestUnverifiedCertificateIsMarked: the certificate a failed handshake
// presented did not verify, so its names are the presenter's claim. The
// overview's refusals and the clients page mark it so, as the CLI's table
// does, and its claimed expiry does not put it above the clients the edge
// verified: a stranger calling itself a known client does not read as it.
func TestUnverifiedCertificateIsMarked(t *testing.T) {
	tc := startConsole(t, consolePolicy(t, t.TempDir(), ""), nil)
	now := time.Now()
	tc.aw.Log(audit.Event{Event: audit.EventTLSFailed, Remote: "198.51.100.9:4000", Reason: "unknown-ca",
		Client: &audit.Client{CN: "PACS-MOD", Fingerprint: "sha256:" + strings.Repeat("b", 64), NotAfter: now.Add(24 * time.Hour)}})
	tc.aw.Log(audit.Event{Event: audit.EventAccepted, Remote: "192.0.2.1:4000", CallingAE: "MOD", CalledAE: "DICOMEDGE", Rule: "echo", Action: "answer",
		Client: &audit.Client{CN: "PACS-MOD", Fingerprint: "sha256:" + strings.Repeat("a", 64), NotAfter: now.Add(90 * 24 * time.Hour)}})
	for tc.Index().Len() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	c := client(t)
	tc.login(t, c, "viewer", "viewer-pw")
	_, page := get(t, c, tc.srv.URL+"/console/")
	if refusals := regexp.MustCompile(`(?s)<table id="refusals">.*?</table>`).FindString(page); !strings.Contains(refusals, "PACS-MOD (unverified) [198.51.100.9]") {
		t.Errorf("the overview's refusals do not mark the failed handshake's certificate unverified:\n%s", refusals)
	}
	_, page = get(t, c, tc.srv.URL+"/console/clients")
	rows := strings.Split(page[strings.Index(page, "<tbody>"):], "<tr")[1:]
	if len(rows) != 2 {
		t.Fatalf("%d client rows, want 2:\n%s", len(rows), page)
	}
	if !strings.Contains(rows[0], strings.Repeat("a", 64)) || strings.Contains(rows[0], "unverified") {
		t.Errorf("first client row: want the verified certificate, unmarked:\n%s", rows[0])
	}
	if !strings.Contains(rows[1], "PACS-MOD (unverified)") {
		t.Errorf("the failed handshake's certificate is not marked unverified:\n%s", rows[1])
	}
}

// adminTLS is the console's TLS configuration under cfg, with its client
// certificate check, as serve builds it.
func adminTLS(t *testing.T, cfg *policy.Config) *tls.Config {
	t.Helper()
	layer, err := tlslayer.New(context.Background(), tlslayer.Config{ClientCAFiles: cfg.TLS.ClientCA, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { layer.Close() })
	tlsCfg, err := layer.AdminConfig(cfg.TLS.Profile, cfg.Admin.Console.ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCfg
}

// serveTLS serves con over HTTPS under tlsCfg until the test ends, and
// returns the server and a pool of the CA in caFile, for its clients.
func serveTLS(t *testing.T, con *Console, tlsCfg *tls.Config, caFile string) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(con.Handler())
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return srv, pool
}
