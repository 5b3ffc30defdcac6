package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Auditor is where the console's own records go: the edge's audit.Writer.
// The console never writes the audit file itself.
type Auditor interface {
	Log(audit.Event) bool
}

// Action is something an operator may do from the console: a policy reload,
// and (where the spool exists) retrying or purging it. Run gets the form
// (values the action's own form fields carry) and returns what happened,
// which is shown and audited as console.action's detail.
type Action struct {
	Name        string // URL segment: POST /console/action/<Name>
	Label       string // the button
	Description string
	// Fields are extra form fields the button's form carries, by name,
	// e.g. {"backend": "pacs"}; Run reads them from form.
	Fields map[string]string
	// Inputs are text fields the operator fills in (e.g. a backend's
	// name); Run reads and checks them from form.
	Inputs []Input
	Run    func(ctx context.Context, form url.Values) (string, error)
}

// Input is one text field of an action's form.
type Input struct {
	Name, Label, Placeholder string
}

// Options are what the console reads from, and how it is reached.
type Options struct {
	// Config returns the policy in force (it changes on reload).
	Config func() *policy.Config
	// AuditFile is the audit log the pages read (policy audit.file).
	AuditFile string
	// Audit receives console.login, console.login_failed, console.action.
	Audit Auditor
	// Live lists the associations open now (proxy.Server.OpenAssociations).
	Live func() []proxy.OpenAssociation
	// EdgeCertificate is the certificate the DICOM listener serves now
	// (files or ACME), for the certificates page; nil reads tls.cert_file.
	EdgeCertificate func() (*tls.Certificate, error)
	// HTTPS says the admin listener also speaks HTTPS (admin.console
	// client_ca): plain-HTTP console requests from other hosts than this
	// one are then sent there, so passwords and cookies do not cross the
	// network in clear.
	HTTPS  bool
	Logger hclog.Logger
	Now    func() time.Time
}

// Console is the web console: its handler, its index of the audit log and
// its sessions.
type Console struct {
	opt   Options
	log   hclog.Logger
	idx   *Index
	tmpl  map[string]*template.Template
	auth  *authenticator
	ss    sessions
	limit limiter

	mu      sync.Mutex
	actions []Action

	verify verifyState
}

// New returns a console reading from o. Call Run to index the audit log.
func New(o Options) (*Console, error) {
	if o.Config == nil || o.AuditFile == "" {
		return nil, errors.New("console: Config and AuditFile are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Live == nil {
		o.Live = func() []proxy.OpenAssociation { return nil }
	}
	c := &Console{opt: o, log: o.Logger.Named("console"), idx: NewIndex(o.AuditFile, o.Now), auth: newAuthenticator()}
	c.verify.mu, c.verify.kick = make(chanMutex, 1), make(chan struct{}, 1)
	var err error
	if c.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	return c, nil
}

// Index is the console's index of the audit log.
func (c *Console) Index() *Index { return c.idx }

// AddAction offers an operator action (see Action). The policy reload is
// one; the spool adds retry and purge.
func (c *Console) AddAction(a Action) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.actions = append(c.actions, a)
}

func (c *Console) action(name string) (Action, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.actions {
		if a.Name == name {
			return a, true
		}
	}
	return Action{}, false
}

func (c *Console) actionList() []Action {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Action(nil), c.actions...)
}

// Run indexes the audit log and keeps the index current until ctx is done;
// it also verifies the hash chain now and then. It does not delay anything:
// serve starts it in its own goroutine, and pages say how far it is.
func (c *Console) Run(ctx context.Context) error {
	go c.verifyLoop(ctx)
	err := c.idx.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Error("indexing the audit log stopped", "error", err)
	}
	return err
}

func (c *Console) console() *policy.Console {
	if cfg := c.opt.Config(); cfg != nil {
		return cfg.Admin.Console
	}
	return nil
}

// Handler serves the console under /console/ ("/" redirects there).
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServer(http.FS(static))))
	mux.HandleFunc("GET /console/login", c.loginPage)
	mux.HandleFunc("POST /console/login", c.login)
	mux.HandleFunc("POST /console/logout", c.authed(c.logout))
	mux.HandleFunc("GET /console/{$}", c.authed(c.overview))
	mux.HandleFunc("GET /console/clients", c.authed(c.clients))
	mux.HandleFunc("GET /console/rules", c.authed(c.rules))
	mux.HandleFunc("GET /console/audit", c.authed(c.auditPage))
	mux.HandleFunc("GET /console/audit/record", c.authed(c.record))
	mux.HandleFunc("GET /console/audit/explain", c.authed(c.explain))
	mux.HandleFunc("GET /console/audit/export", c.authed(c.export))
	mux.HandleFunc("GET /console/certificates", c.authed(c.certificates))
	mux.HandleFunc("POST /console/action/{name}", c.authed(c.act))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	return c.secure(mux)
}

// secure sets the headers every console answer carries, sends plain-HTTP
// requests from other hosts to HTTPS when it is served, and bounds forms.
func (c *Console) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// No script at all, inline or not; styles from the console's own
		// file; images (the charts) are inline SVG. No framing.
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		// same-origin: no URL (with its filter values) leaves the site in a
		// Referer, while the browser still names this origin in the Origin
		// header of a POST (with no-referrer it sends "null").
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		if strings.HasPrefix(r.URL.Path, "/console/static/") {
			hd.Set("Cache-Control", "no-cache")
		} else {
			hd.Set("Cache-Control", "no-store")
		}
		if r.TLS != nil {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		} else if c.opt.HTTPS && !loopback(r) {
			u := *r.URL
			u.Scheme, u.Host = "https", r.Host
			http.Redirect(w, r, u.String(), http.StatusPermanentRedirect)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		h.ServeHTTP(w, r)
	})
}

func loopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type ctxKey struct{}

// authed lets a request through with a session (cookie) or a verified
// administrator certificate; others get 401 and the login page (GET) or a
// bare 401. A POST must carry the session's CSRF token.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := c.opt.Now()
		s := c.sessionOf(r, now)
		if s == nil {
			if r.Method == http.MethodGet {
				c.renderLogin(w, r, http.StatusUnauthorized, "")
				return
			}
			http.Error(w, "401 unauthorized: sign in first", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) || !tokensEqual(r.PostFormValue(csrfField), s.csrf) {
				c.audit(r, s, audit.EventConsoleAction, fmt.Sprintf("%s: refused: missing or wrong CSRF token", r.URL.Path))
				http.Error(w, "403 forbidden: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, s)
	}
}

// sameOrigin refuses a POST whose Origin header names another site (a
// second line behind the CSRF token and SameSite=Strict). A missing or
// opaque ("null") origin says nothing, and the token decides.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// sessionOf finds the request's session: a certificate login (one session
// per certificate, created and audited at its first request) or the cookie.
// It returns this request's copy, with the role the policy in force gives:
// a role removed or changed by a reload applies at once, to a certificate's
// session as to a password's.
func (c *Console) sessionOf(r *http.Request, now time.Time) *session {
	cons := c.console()
	if cons == nil {
		return nil
	}
	if cl := certClient(r); cl != nil && len(cons.ClientCA) > 0 {
		if s := c.ss.certSession(cl.Fingerprint, now); s != nil {
			s.role = certRole(cons, cl.CN)
			return s
		}
		s := c.ss.create(&session{client: cl, role: certRole(cons, cl.CN)}, now)
		c.audit(r, s, audit.EventConsoleLogin, "certificate, role "+s.role)
		return s
	}
	ck, err := r.Cookie(c.cookieName(r))
	if err != nil {
		return nil
	}
	s := c.ss.get(ck.Value, now)
	if s == nil {
		return nil
	}
	if s.user != "" {
		found := false
		for _, u := range cons.Users {
			if u.Name == s.user {
				s.role, found = u.Role, true
			}
		}
		if !found {
			c.ss.drop(s.id)
			return nil
		}
	}
	return s
}

func (c *Console) cookieName(r *http.Request) string {
	if r.TLS != nil {
		return cookieNameTLS
	}
	return cookieName
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration, path string) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: int(maxAge / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// audit writes a console record through the edge's audit writer.
func (c *Console) audit(r *http.Request, s *session, event, detail string) {
	e := audit.Event{Event: event, Remote: r.RemoteAddr, Detail: detail}
	if s != nil {
		e.User = s.user
		e.Client = s.client
	}
	if c.opt.Audit != nil {
		c.opt.Audit.Log(e)
	}
	c.log.Info(event, "user", audit.Escape(e.User), "remote", r.RemoteAddr, "detail", audit.Escape(detail))
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if s := c.sessionOf(r, c.opt.Now()); s != nil {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "")
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	// Double-submit token: the form and a cookie must carry the same one.
	tok := newToken()
	c.setCookie(w, r, loginCSRFName, tok, 10*time.Minute, "/console/login")
	cons := c.console()
	c.render(w, status, "login", map[string]any{
		"CSRF": tok, "Message": msg,
		"Users":     cons != nil && len(cons.Users) > 0,
		"CertsOK":   cons != nil && len(cons.ClientCA) > 0,
		"TLS":       r.TLS != nil,
		"NoConsole": cons == nil,
	})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	now := c.opt.Now()
	ck, err := r.Cookie(loginCSRFName)
	if err != nil || !sameOrigin(r) || !tokensEqual(r.PostFormValue(csrfField), ck.Value) {
		http.Error(w, "403 forbidden: the form's CSRF token is missing or wrong; reload the login page", http.StatusForbidden)
		return
	}
	name := r.PostFormValue("user")
	if len(name) > maxUserNameLen {
		name = name[:maxUserNameLen]
	}
	ok, record := c.limit.allow(sourceOf(r), now)
	if !ok {
		if record {
			c.audit(r, &session{user: name}, audit.EventConsoleLoginFailed, "rate limited: too many sign-in attempts from this address")
		}
		w.Header().Set("Retry-After", fmt.Sprint(int(loginRefill/time.Second)))
		c.renderLogin(w, r, http.StatusTooManyRequests, "Too many attempts from your address; wait a minute and try again.")
		return
	}
	role, good := c.auth.check(c.console(), name, r.PostFormValue("password"))
	if !good {
		c.audit(r, &session{user: name}, audit.EventConsoleLoginFailed, "wrong password or unknown user")
		c.renderLogin(w, r, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	s := c.ss.create(&session{user: name, role: role}, now)
	c.audit(r, s, audit.EventConsoleLogin, "password, role "+role)
	c.setCookie(w, r, c.cookieName(r), s.id, sessionMaxAge, "/")
	c.setCookie(w, r, loginCSRFName, "", -1, "/console/login")
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.ss.drop(s.id)
	c.audit(r, s, audit.EventConsoleAction, "logout")
	c.setCookie(w, r, c.cookieName(r), "", -1, "/")
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// act runs an operator action. A viewer is refused (403), and the refusal
// is audited like the action would have been.
func (c *Console) act(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	a, ok := c.action(name)
	if !ok {
		http.Error(w, "404 no such action", http.StatusNotFound)
		return
	}
	if s.role != policy.RoleOperator {
		c.audit(r, s, audit.EventConsoleAction, fmt.Sprintf("%s: refused: role %s", name, s.role))
		c.render(w, http.StatusForbidden, "message", c.page(r, s, "Refused", map[string]any{
			"Title": "Refused", "Text": fmt.Sprintf("%q needs the operator role; you are signed in as a %s.", a.Label, s.role)}))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	out, err := a.Run(ctx, r.PostForm)
	detail := name + ": ok: " + out
	status := http.StatusOK
	if err != nil {
		detail, status = name+": failed: "+err.Error(), http.StatusUnprocessableEntity
	}
	c.audit(r, s, audit.EventConsoleAction, detail)
	c.render(w, status, "message", c.page(r, s, a.Label, map[string]any{"Title": a.Label, "Text": audit.Escape(detail)}))
}
