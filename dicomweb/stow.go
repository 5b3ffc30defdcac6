package dicomweb

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dicomedge/dicomedge/spool"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// Bounds of one STOW-RS request and of what is read back.
const (
	// DefaultBatch and DefaultBatchBytes bound one request: several
	// instances share its round trip, and a refused request costs little.
	DefaultBatch      = 32
	DefaultBatchBytes = 32 << 20
	// maxResponse bounds the response body read: a Store Instances
	// Response of a batch is a few kilobytes.
	maxResponse = 1 << 20
	// tokenTimeout bounds one token request.
	tokenTimeout = time.Minute
	// maxErrorCode bounds the authorization server's error code quoted
	// in an error (RFC 6749 5.2 codes are a few words).
	maxErrorCode = 64
)

// Time bounds of a STOW-RS request (variables for the tests). The upload
// itself has no bound as a whole: a large instance over a slow link may
// take longer than any fixed one, and cut off it would be sent again
// forever, holding up the queue behind it.
var (
	// requestTimeout bounds the wait for the response once the request
	// is sent (the service stores the instances meanwhile).
	requestTimeout = 5 * time.Minute
	// stallTimeout bounds an upload that makes no progress, and the
	// reading of the response body (at most maxResponse bytes).
	stallTimeout = 2 * time.Minute
)

// errStalled and errNoResponse say why a request was cut off.
var (
	errStalled    = errors.New("the upload made no progress")
	errNoResponse = errors.New("no response once the request was sent")
	errSlowBody   = errors.New("the response body took too long")
)

// watchdog cancels a request when it is not re-armed in time: re-armed by
// every step of the upload, then once for the response and once for its
// body. The transport reads the body on its own goroutine, hence the lock.
type watchdog struct {
	mu     sync.Mutex
	t      *time.Timer
	cause  error
	cancel context.CancelCauseFunc
}

func newWatchdog(cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{cancel: cancel, cause: errStalled}
	w.t = time.AfterFunc(stallTimeout, func() {
		w.mu.Lock()
		cause := w.cause
		w.mu.Unlock()
		cancel(cause)
	})
	return w
}

func (w *watchdog) arm(d time.Duration, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cause = cause
	w.t.Reset(d)
}

func (w *watchdog) stop() { w.t.Stop() }

// progressReader re-arms the watchdog for each part of the upload read,
// and for the response when all of it is.
type progressReader struct {
	r  io.Reader
	wd *watchdog
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.wd.arm(stallTimeout, errStalled)
	}
	if err == io.EOF {
		p.wd.arm(requestTimeout, errNoResponse)
	}
	return n, err
}

// Config describes one STOW-RS destination.
type Config struct {
	Name      string // the backend's name, for messages
	URL       string // DICOMweb base URL; STOW-RS posts to URL + "/studies"
	Profile   string // PS3.15 TLS profile
	CA        []string
	CertFile  string
	KeyFile   string
	TokenFile string
	OAuth2    *OAuth2
	// Batch and BatchBytes bound one request; 0 = the defaults.
	Batch      int
	BatchBytes int64
}

// OAuth2 is the client credentials grant (RFC 6749 4.4).
type OAuth2 struct {
	TokenURL, ClientID, ClientSecretFile string
	Scopes                               []string
}

// Sender posts spooled instances to one STOW-RS service (spool.Sender).
type Sender struct {
	cfg    Config
	client *http.Client
	tr     *http.Transport
	// tokenTr reaches the OAuth 2.0 token endpoint.
	tokenTr *http.Transport

	mu        sync.Mutex
	token     string
	tokenStat string // size and modification time the token was read at
	oauth     oauth2.TokenSource
	oauthStat string
}

// New builds a Sender; the TLS files are read now.
func New(cfg Config) (*Sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("dicomweb: %q is not an https URL", cfg.URL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	tc, err := tlslayer.OutboundConfig(tlslayer.Outbound{Profile: cfg.Profile, CAFiles: cfg.CA, Address: host,
		CertFile: cfg.CertFile, KeyFile: cfg.KeyFile})
	if err != nil {
		return nil, fmt.Errorf("dicomweb: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 2,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 30 * time.Second,
		Proxy: http.ProxyFromEnvironment}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	s := &Sender{cfg: cfg, tr: tr, client: &http.Client{Transport: tr,
		// A redirect would re-send the credentials elsewhere; a STOW-RS
		// endpoint has a fixed URL.
		CheckRedirect: noRedirects}}
	if cfg.OAuth2 != nil {
		if s.tokenTr, err = tokenTransport(cfg.OAuth2.TokenURL, u, tc); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// noRedirects leaves a redirect unfollowed: the caller sees the 3xx.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// tokenTransport is the transport to the authorization server: the same
// roots and TLS profile as the service's, but its certificate is checked
// for the token endpoint's own name (the service's config names the
// service), and the client certificate meant for the service is presented
// only when the token endpoint is on the same host.
func tokenTransport(tokenURL string, service *url.URL, tc *tls.Config) (*http.Transport, error) {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("dicomweb: oauth2 token_url %q is not an https URL", tokenURL)
	}
	ttc := tc.Clone()
	ttc.ServerName = u.Hostname()
	if !strings.EqualFold(u.Hostname(), service.Hostname()) {
		ttc.Certificates, ttc.GetClientCertificate = nil, nil
	}
	return &http.Transport{TLSClientConfig: ttc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 30 * time.Second, ResponseHeaderTimeout: tokenTimeout,
		Proxy: http.ProxyFromEnvironment}, nil
}

// Batch bounds one request.
func (s *Sender) Batch() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Batch, s.cfg.BatchBytes
}

// Close drops idle connections.
func (s *Sender) Close() error {
	s.tr.CloseIdleConnections()
	if s.tokenTr != nil {
		s.tokenTr.CloseIdleConnections()
	}
	return nil
}

func fileStat(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d|%d", fi.Size(), fi.ModTime().UnixNano()), nil
}

// authorization returns the Authorization header value, or "" without
// credentials. The token file is read again when its size or modification
// time changed, so a sidecar that refreshes it is followed without a reload.
func (s *Sender) authorization(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cfg.TokenFile != "":
		st, err := fileStat(s.cfg.TokenFile)
		if err != nil {
			return "", fmt.Errorf("token_file: %w", err)
		}
		if st != s.tokenStat {
			b, err := os.ReadFile(s.cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("token_file: %w", err)
			}
			tok := strings.TrimSpace(string(b))
			if tok == "" || strings.ContainsAny(tok, "\r\n\x00") {
				return "", errors.New("token_file holds no usable token")
			}
			s.token, s.tokenStat = tok, st
		}
		return "Bearer " + s.token, nil
	case s.cfg.OAuth2 != nil:
		o := s.cfg.OAuth2
		st, err := fileStat(o.ClientSecretFile)
		if err != nil {
			return "", fmt.Errorf("oauth2 client_secret_file: %w", err)
		}
		if st != s.oauthStat || s.oauth == nil {
			b, err := os.ReadFile(o.ClientSecretFile)
			if err != nil {
				return "", fmt.Errorf("oauth2 client_secret_file: %w", err)
			}
			cc := clientcredentials.Config{ClientID: o.ClientID, ClientSecret: strings.TrimSpace(string(b)), TokenURL: o.TokenURL, Scopes: o.Scopes}
			// A redirect is not followed: it would re-send the client
			// secret (in the header or the body) to wherever it points,
			// plain http included.
			tctx := context.WithValue(context.Background(), oauth2.HTTPClient,
				&http.Client{Transport: s.tokenTr, Timeout: tokenTimeout, CheckRedirect: noRedirects})
			s.oauth, s.oauthStat = cc.TokenSource(tctx), st
		}
		// The token source keeps the context it was made with; the
		// caller's (shutdown, reload) ends the wait here instead, and an
		// abandoned request ends within its own bound.
		type result struct {
			tok *oauth2.Token
			err error
		}
		ch := make(chan result, 1)
		src := s.oauth
		go func() {
			tok, err := src.Token()
			ch <- result{tok, err}
		}()
		var res result
		select {
		case res = <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("oauth2 token: %w", ctx.Err())
		}
		tok, err := res.tok, res.err
		if err != nil {
			return "", tokenError(err)
		}
		return tok.Type() + " " + tok.AccessToken, nil
	}
	return "", nil
}

// tokenError describes a failed token request without the authorization
// server's response body, which the oauth2 package quotes whole (up to
// 1 MiB, control characters included) and which would otherwise become
// the spool's last error: the HTTP status and the RFC 6749 5.2 error
// code, quoted and cut, say what went wrong.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("oauth2 token: %w", err)
	}
	msg := "oauth2 token: the authorization server refused the token request"
	if re.Response != nil {
		msg = fmt.Sprintf("oauth2 token: the authorization server answered HTTP %d", re.Response.StatusCode)
		if loc := re.Response.Header.Get("Location"); loc != "" && re.Response.StatusCode/100 == 3 {
			msg += " (a redirect, not followed: check token_url)"
		}
	}
	if code := re.ErrorCode; code != "" {
		if len(code) > maxErrorCode {
			code = code[:maxErrorCode]
		}
		msg += fmt.Sprintf(" (error %q)", code)
	}
	return errors.New(msg)
}

// boundary returns a random multipart boundary (RFC 2046 5.1.1).
func boundary() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "dicomedge-" + hex.EncodeToString(b[:])
}

// Send posts the batch in one STOW-RS request (PS3.18 10.5.1) and returns
// each instance's outcome.
func (s *Sender) Send(ctx context.Context, batch []*spool.Entry) []error {
	errs := make([]error, len(batch))
	all := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	auth, err := s.authorization(ctx)
	if err != nil {
		return all(fmt.Errorf("dicomweb %s: %w", s.cfg.Name, err))
	}
	bnd := boundary()
	var parts []io.Reader
	var length int64
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Each part is one Part 10 file (PS3.18 8.6.1.2: a multipart/related
	// payload of application/dicom parts).
	head := "--" + bnd + "\r\nContent-Type: application/dicom\r\n\r\n"
	for i, e := range batch {
		f, err := os.Open(e.Path)
		if err != nil {
			errs[i] = spool.Permanent(fmt.Errorf("spooled file unreadable: %w", err))
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			errs[i] = spool.Permanent(err)
			continue
		}
		fm, err := spool.ReadFileMeta(f)
		if err != nil {
			f.Close()
			errs[i] = spool.Permanent(err)
			continue
		}
		files = append(files, f)
		// The File Meta as it leaves the edge (without the edge's own
		// Private Information), then the data set as received.
		meta := spool.PublicFileMeta(fm)
		data := fi.Size() - fm.DataOffset
		parts = append(parts, strings.NewReader(head), bytes.NewReader(meta), io.NewSectionReader(f, fm.DataOffset, data), strings.NewReader("\r\n"))
		length += int64(len(head)) + int64(len(meta)) + data + 2
	}
	if len(files) == 0 {
		return errs
	}
	tail := "--" + bnd + "--\r\n"
	parts = append(parts, strings.NewReader(tail))
	length += int64(len(tail))
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wd := newWatchdog(cancel)
	defer wd.stop()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.cfg.URL+"/studies", &progressReader{r: io.MultiReader(parts...), wd: wd})
	if err != nil {
		return all(spool.Permanent(err))
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+bnd)
	req.Header.Set("Accept", "application/dicom+json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rsp, err := s.client.Do(req)
	if err != nil {
		if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil {
			return all(fmt.Errorf("dicomweb %s: STOW-RS request cut off: %w", s.cfg.Name, cause))
		}
		return all(fmt.Errorf("dicomweb %s: %w", s.cfg.Name, err))
	}
	defer rsp.Body.Close()
	// The body is bounded in time as a whole, progress or not: it is
	// small, and a service that trickles it holds up the queue.
	wd.arm(stallTimeout, errSlowBody)
	if rsp.StatusCode == http.StatusUnauthorized {
		// The credentials were refused before they expired (revoked, keys
		// rotated): the next attempt reads the token file again and asks
		// for a new access token, rather than present this one until its
		// expires_in passes.
		s.mu.Lock()
		s.tokenStat, s.oauth = "", nil
		s.mu.Unlock()
	}
	body, _ := io.ReadAll(io.LimitReader(rsp.Body, maxResponse))
	_, _ = io.Copy(io.Discard, io.LimitReader(rsp.Body, maxResponse))
	if rsp.StatusCode == http.StatusRequestEntityTooLarge && len(files) > 1 {
		// The service takes smaller requests: send fewer instances per
		// request from now on; a single instance it refuses is refused.
		s.mu.Lock()
		s.cfg.Batch = max(1, len(files)/2)
		s.cfg.BatchBytes = max(1, s.cfg.BatchBytes/2)
		n := s.cfg.Batch
		s.mu.Unlock()
		return all(fmt.Errorf("dicomweb %s: STOW-RS HTTP 413: request of %d instances too large; now at most %d per request", s.cfg.Name, len(files), n))
	}
	res := Classify(rsp.StatusCode, body)
	// A refusal of the whole request (409, 400, ...) may be about one of
	// its instances only, and says nothing of those it does not name:
	// each of them is sent again alone, to be judged on its own rather
	// than moved to failed/ with another's fault.
	var alone []int
	for i, e := range batch {
		if errs[i] != nil {
			continue
		}
		if len(files) > 1 && spool.IsPermanent(res.Whole) && !res.names(e.Meta.SOPInstance) {
			alone = append(alone, i)
			continue
		}
		if err := res.For(e.Meta.SOPInstance); err != nil {
			errs[i] = fmt.Errorf("dicomweb %s: %w", s.cfg.Name, err)
			if spool.IsPermanent(err) {
				errs[i] = spool.Permanent(errs[i])
			}
		}
	}
	for _, i := range alone {
		if ctx.Err() != nil {
			errs[i] = fmt.Errorf("dicomweb %s: %w", s.cfg.Name, ctx.Err())
			continue
		}
		errs[i] = s.Send(ctx, batch[i:i+1])[0]
	}
	return errs
}

// names reports whether the response says what became of the instance.
func (r *Result) names(sopInstance string) bool {
	_, failed := r.Failed[sopInstance]
	return failed || r.Stored[sopInstance]
}

// Result is a STOW-RS response read per instance.
type Result struct {
	Status int
	// Whole is the outcome of every instance the response does not name:
	// nil delivered, else the error (permanent or transient).
	Whole  error
	Failed map[string]uint16 // SOP Instance UID → Failure Reason (0008,1197)
	Stored map[string]bool   // in Referenced SOP Sequence (0008,1199)
	// unattributed: the Failed SOP Sequence has an item naming no
	// instance, which may be any one the response does not name stored.
	unattributed bool
}

// For returns the outcome of one instance.
func (r *Result) For(sopInstance string) error {
	if reason, ok := r.Failed[sopInstance]; ok {
		err := fmt.Errorf("STOW-RS HTTP %d: instance refused, failure reason 0x%04X", r.Status, reason)
		// PS3.18 10.5.3 / PS3.4 B.2.3: 0xA7xx is out of resources, which
		// may pass; every other reason is about the instance itself.
		if reason&0xFF00 == 0xA700 {
			return err
		}
		return spool.Permanent(err)
	}
	if r.Stored[sopInstance] {
		return nil
	}
	if r.unattributed && r.Whole == nil {
		return fmt.Errorf("STOW-RS HTTP %d: the response lists a failure without its instance; it is sent again", r.Status)
	}
	return r.Whole
}

// Classify reads an HTTP status and Store Instances Response body (DICOM
// JSON, PS3.18 F.2) into per-instance outcomes. 200: stored; 202: some
// failed (the Failed SOP Sequence names them), and only those the
// Referenced SOP Sequence names are stored; 409: none stored. 401 and
// 403 are an authentication problem, and 3xx a redirect not followed,
// transient: the instances stay queued until the token or url is fixed. 408, 429 and 5xx are transient; other 4xx
// permanent.
func Classify(status int, body []byte) *Result {
	r := &Result{Status: status, Failed: map[string]uint16{}, Stored: map[string]bool{}}
	parseStoreResponse(body, r)
	switch {
	case status == http.StatusOK:
		r.Whole = nil
	case status == http.StatusAccepted:
		// Some instances were not stored (PS3.18 10.5.3.1), and only the
		// Referenced SOP Sequence names those that were: one it does not
		// name (the body cut or unreadable, or silent about it) is sent
		// again, which is harmless, rather than dropped as delivered.
		r.Whole = errors.New("STOW-RS HTTP 202: the response does not name the instance as stored; it is sent again")
	case status == http.StatusConflict:
		r.Whole = spool.Permanent(fmt.Errorf("STOW-RS HTTP 409: the service stored none of the request's instances"))
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		r.Whole = fmt.Errorf("STOW-RS HTTP %d: the service refused the credentials (check token_file or oauth2)", status)
	case status >= 300 && status < 400:
		// Not followed (the credentials would go with it): the request
		// never reached a STOW-RS service, so nothing is said about the
		// instances; they wait until the url is corrected.
		r.Whole = fmt.Errorf("STOW-RS HTTP %d: the service redirected the request, which is not followed (check url)", status)
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		r.Whole = fmt.Errorf("STOW-RS HTTP %d %s", status, http.StatusText(status))
	default:
		r.Whole = spool.Permanent(fmt.Errorf("STOW-RS HTTP %d %s", status, http.StatusText(status)))
	}
	return r
}

// DICOM JSON attributes of the Store Instances Response (PS3.18 10.5.3.2).
const (
	tagFailedSOPSequence     = "00081198"
	tagReferencedSOPSequence = "00081199"
	tagReferencedSOPInstance = "00081155"
	tagFailureReason         = "00081197"
)

type jsonAttr struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

// parseStoreResponse fills r from a DICOM JSON body; anything else (an
// HTML error page, XML) is ignored, leaving the HTTP status to decide.
func parseStoreResponse(body []byte, r *Result) {
	var ds map[string]jsonAttr
	if json.Unmarshal(body, &ds) != nil {
		// Some services answer a one-element array.
		var arr []map[string]jsonAttr
		if json.Unmarshal(body, &arr) != nil || len(arr) == 0 {
			return
		}
		ds = arr[0]
	}
	items := func(tag string) []map[string]jsonAttr {
		var out []map[string]jsonAttr
		for _, raw := range ds[tag].Value {
			var it map[string]jsonAttr
			if json.Unmarshal(raw, &it) == nil {
				out = append(out, it)
			}
		}
		return out
	}
	str := func(it map[string]jsonAttr, tag string) string {
		if v := it[tag].Value; len(v) > 0 {
			var s string
			if json.Unmarshal(v[0], &s) == nil {
				// DICOM JSON has no padding (PS3.18 F.2.2), but a
				// service converting from binary may leave it.
				return strings.TrimRight(s, "\x00 ")
			}
		}
		return ""
	}
	for _, it := range items(tagFailedSOPSequence) {
		uid := str(it, tagReferencedSOPInstance)
		var reason uint16 = 0xC000
		if v := it[tagFailureReason].Value; len(v) > 0 {
			var n uint16
			if json.Unmarshal(v[0], &n) == nil {
				reason = n
			}
		}
		if uid != "" {
			r.Failed[uid] = reason
		} else {
			r.unattributed = true
		}
	}
	for _, it := range items(tagReferencedSOPSequence) {
		if uid := str(it, tagReferencedSOPInstance); uid != "" {
			r.Stored[uid] = true
		}
	}
}
