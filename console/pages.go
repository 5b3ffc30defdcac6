package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/policytool"
)

// Every string a client chose (AE titles, certificate names, UIDs, user
// names typed at the login form) reaches a page through esc: the CLI's
// audit.Escape (C0/C1 controls, bidirectional and other format characters
// as \uXXXX), then html/template's contextual escaping. View models below
// hold only escaped strings.
func esc(s string) string { return audit.Escape(s) }

// pageSize is how many records the audit page lists at once.
const pageSize = 50

// unusedAfter marks a rule no traffic has hit for this long.
const unusedAfter = 30 * 24 * time.Hour

// expiringWithin puts a client certificate this close to expiry first.
const expiringWithin = 30 * 24 * time.Hour

// page is the frame every page shares.
type page struct {
	Title    string
	Refresh  int // seconds: the page reloads itself (a meta refresh, no script)
	Nav      string
	Who      string
	Role     string
	Operator bool
	CSRF     string
	Indexed  int
	CaughtUp bool
	IndexErr string
	Data     any
}

func (c *Console) page(r *http.Request, s *session, nav string, data any) page {
	return page{Title: nav, Nav: nav, Who: esc(s.name()), Role: s.role, Operator: s.role == policy.RoleOperator,
		CSRF: s.csrf, Indexed: c.idx.Len(), CaughtUp: c.idx.CaughtUp(), IndexErr: esc(c.idx.Err()), Data: data}
}

func (c *Console) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := c.tmpl[name].ExecuteTemplate(&b, "page", data); err != nil {
		c.log.Error("template", "page", name, "error", err)
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// clientName names a certificate as the CLI's table does.
func clientName(cl *audit.Client, host string) string {
	if cl == nil && host != "" {
		return "[" + host + "]"
	}
	return audit.ClientName(cl)
}

func hostOf(remote string) string {
	h, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return h
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n), 0
	for ; v >= unit && i < 5; i++ {
		v /= unit
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + "KMGTPE"[i-1:i] + "iB"
}

func humanAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

const timeLayout = "2006-01-02 15:04:05Z"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeLayout)
}

// ---- Overview ----

type openRow struct {
	Client, Fingerprint, Remote, Calling, Called, Listener, Rule, Action, Backend string
	In, Out, Age                                                                  string
}

type refusalRow struct {
	Seq                                                uint64
	Time, Client, Calling, Called, Event, Reason, Rule string
}

type overviewData struct {
	Open       []openRow
	Refusals   []refusalRow
	AssocChart template.HTML
	RefChart   template.HTML
	Assoc24h   int
	Refused24h int
	Actions    []Action
	Verify     verifyView
	Policy     string
	Refresh    int
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.opt.Now()
	c.wantVerify()
	d := overviewData{Actions: c.actionList(), Verify: c.verify.view()}
	if cfg := c.opt.Config(); cfg != nil {
		d.Policy = esc(cfg.Filename)
	}
	for _, a := range c.opt.Live() {
		d.Open = append(d.Open, openRow{
			Client: esc(clientName(a.Client, hostOf(a.Remote))), Remote: esc(a.Remote),
			Calling: esc(a.CallingAE), Called: esc(a.CalledAE), Listener: esc(a.Listener), Rule: esc(a.Rule),
			Action: a.Action, Backend: esc(a.Backend), In: humanBytes(a.BytesIn), Out: humanBytes(a.BytesOut),
			Age: humanAge(now.Sub(a.Since)),
		})
	}
	for _, pos := range c.idx.Refusals(15) {
		line, err := c.idx.Line(pos)
		if err != nil {
			continue
		}
		var e audit.Event
		if e.UnmarshalJSON(line) != nil {
			continue
		}
		calling, called, _, cl, host := c.idx.Context(pos)
		reason := e.Reason
		if e.Detail != "" && e.Event != audit.EventRejected {
			reason += ": " + e.Detail
		}
		if e.Client == nil {
			e.Client = cl
		}
		if e.Remote == "" && host != "" {
			e.Remote = net.JoinHostPort(host, "0") // only the host is shown
		}
		// Named as the CLI's table names it: a failed handshake's
		// certificate is marked unverified, beside its source address, so a
		// stranger calling itself a known client does not read as that client.
		d.Refusals = append(d.Refusals, refusalRow{Seq: e.Seq, Time: fmtTime(e.Time), Client: esc(audit.Who(&e)),
			Calling: esc(calling), Called: esc(called), Event: esc(e.Event), Reason: esc(reason), Rule: esc(e.Rule)})
	}
	assoc, ref := c.idx.Series(now)
	for i := range assoc {
		d.Assoc24h += assoc[i]
		d.Refused24h += ref[i]
	}
	d.AssocChart = chartSVG("Associations accepted per minute, last 24 h", assoc, now, "#2b6cb0")
	d.RefChart = chartSVG("Refusals per minute (rejected, TLS failed, connection refused), last 24 h", ref, now, "#c53030")
	p := c.page(r, s, "Overview", d)
	// ?refresh=N keeps the overview live without script: the browser
	// reloads it every N seconds (5 to 300).
	if n, err := strconv.Atoi(r.URL.Query().Get("refresh")); err == nil {
		p.Refresh = min(max(n, 5), 300)
		d.Refresh = p.Refresh
		p.Data = d
	}
	c.render(w, http.StatusOK, "overview", p)
}

// ---- Clients ----

type clientRow struct {
	Name, Subject, Fingerprint, Issuer, NotAfter, DaysLeft string
	Expiring, Expired                                      bool
	FirstSeen, LastSeen                                    string
	Accepted, Rejected, TLSFailures                        int
	Filter                                                 string // the audit page's client filter for it
}

func (c *Console) clients(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.opt.Now()
	var rows []clientRow
	for _, cs := range c.idx.Clients(now, expiringWithin) {
		row := clientRow{
			Name: esc(clientName(&cs.Client, "")), Subject: esc(cs.Client.Subject), Fingerprint: esc(cs.Client.Fingerprint),
			Issuer: esc(cs.Client.Issuer), FirstSeen: fmtTime(cs.FirstSeen), LastSeen: fmtTime(cs.LastSeen),
			Accepted: cs.Accepted, Rejected: cs.Rejected, TLSFailures: cs.TLSFailures, NotAfter: "-", DaysLeft: "-",
		}
		if cs.Host == "" && !cs.Verified {
			// As the CLI marks it: the name is the presenter's claim.
			row.Name = esc(clientName(&cs.Client, "") + " (unverified)")
		}
		if cs.Host != "" {
			row.Name = esc("[" + cs.Host + "]")
			row.Filter = cs.Host
		} else if cs.Client.Fingerprint != "" {
			row.Filter = cs.Client.Fingerprint
		}
		if na := cs.Client.NotAfter; !na.IsZero() {
			row.NotAfter = fmtTime(na)
			days := int(na.Sub(now).Hours() / 24)
			row.DaysLeft = strconv.Itoa(days)
			row.Expired = na.Before(now)
			row.Expiring = !row.Expired && na.Before(now.Add(expiringWithin))
			if row.Expired {
				row.DaysLeft = "expired"
			}
		}
		rows = append(rows, row)
	}
	c.render(w, http.StatusOK, "clients", c.page(r, s, "Clients", rows))
}

// ---- Rules ----

type ruleRow struct {
	Name                 string
	InPolicy             bool
	Hits, Rejections     int
	LastUse              string
	Unused               bool
	Action, Where, Usage string
}

func (c *Console) rules(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.opt.Now()
	stats := c.idx.Rules()
	cfg := c.opt.Config()
	var rows []ruleRow
	seen := map[string]bool{}
	if cfg != nil && cfg.Policy != nil {
		for _, name := range cfg.Policy.Rules() {
			st := stats[name]
			seen[name] = true
			row := ruleRow{Name: esc(name), InPolicy: true, Hits: st.Hits, Rejections: st.Rejections, LastUse: fmtTime(st.LastUse),
				Unused: st.LastUse.IsZero() || now.Sub(st.LastUse) > unusedAfter}
			rows = append(rows, row)
		}
	}
	for name, st := range stats {
		if !seen[name] {
			rows = append(rows, ruleRow{Name: esc(name), Hits: st.Hits, Rejections: st.Rejections, LastUse: fmtTime(st.LastUse)})
		}
	}
	c.render(w, http.StatusOK, "rules", c.page(r, s, "Rules", rows))
}

// ---- Audit ----

// form is the audit page's filter form, as typed (escaped when shown).
type form struct {
	Client, CallingAE, CalledAE, Event, Decision, Listener, UID, Since, Until string
}

func (f form) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"client": f.Client, "calling_ae": f.CallingAE, "called_ae": f.CalledAE, "event": f.Event,
		"decision": f.Decision, "listener": f.Listener, "uid": f.UID, "since": f.Since, "until": f.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

func (c *Console) parseFilter(r *http.Request) (form, Filter, error) {
	q := r.URL.Query()
	get := func(k string) string {
		v := q.Get(k)
		if len(v) > 256 {
			v = v[:256]
		}
		return v
	}
	fm := form{Client: get("client"), CallingAE: get("calling_ae"), CalledAE: get("called_ae"), Event: get("event"),
		Decision: get("decision"), Listener: get("listener"), UID: get("uid"), Since: get("since"), Until: get("until")}
	f := Filter{Client: fm.Client, CallingAE: fm.CallingAE, CalledAE: fm.CalledAE, Event: fm.Event,
		Decision: fm.Decision, Listener: fm.Listener, UID: fm.UID}
	now := c.opt.Now()
	var err error
	if f.Since, err = audit.ParseWhen(fm.Since, now); err != nil {
		return fm, f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = audit.ParseWhen(fm.Until, now); err != nil {
		return fm, f, fmt.Errorf("until: %w", err)
	}
	return fm, f, nil
}

type auditRow struct {
	Seq                                                    uint64
	Time, Client, AE, Event, Decision, Status, Bytes, Rule string
	Association                                            bool
}

type auditData struct {
	Form       form
	FormEsc    form
	Error      string
	Total      int
	From, To   int
	Rows       []auditRow
	Prev, Next string
	// Export is the export link's whole URL, built here: html/template
	// escapes a value placed after the "?" of an href as one query
	// component ("=" and "&" too), which would turn the filter into a
	// parameter nobody reads and export the whole log.
	Export string
	Took   string
}

// inherit fills in what the record at pos inherits from its association
// (AE titles, listener, client), as `dicomedge audit` does, and returns
// the association's source host.
func (c *Console) inherit(e *audit.Event, pos int) (host string) {
	calling, called, listener, cl, host := c.idx.Context(pos)
	if e.CallingAE == "" {
		e.CallingAE = calling
	}
	if e.CalledAE == "" {
		e.CalledAE = called
	}
	if e.Listener == "" {
		e.Listener = listener
	}
	if e.Client == nil {
		e.Client = cl
	}
	return host
}

// row is what the CLI's table shows of a record, cell for cell
// (audit.TableRow, escaped), with the fields the record inherits from its
// association filled in from the index as `dicomedge audit` fills them.
func (c *Console) row(pos int, line []byte) (auditRow, bool) {
	var e audit.Event
	if e.UnmarshalJSON(line) != nil {
		return auditRow{}, false
	}
	host := c.inherit(&e, pos)
	if e.Remote == "" && host != "" {
		e.Remote = net.JoinHostPort(host, "0") // only the host is shown
	}
	cells := audit.TableRow(&e)
	return auditRow{Seq: e.Seq, Time: cells[0], Client: cells[1], AE: cells[2], Event: cells[3], Decision: cells[4],
		Status: cells[5], Bytes: cells[6], Association: e.Event == audit.EventAccepted || e.Event == audit.EventRejected}, true
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	start := time.Now()
	fm, f, err := c.parseFilter(r)
	d := auditData{Form: fm, FormEsc: escForm(fm), Export: "/console/audit/export?" + fm.query()}
	if err != nil {
		d.Error = esc(err.Error())
		c.render(w, http.StatusBadRequest, "audit", c.page(r, s, "Audit", d))
		return
	}
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	offset = max(offset, 0)
	total, hits, err := c.idx.Query(f, offset, pageSize)
	if err != nil {
		d.Error = esc(err.Error())
	}
	d.Total = total
	for _, h := range hits {
		if row, ok := c.row(h.Pos, h.Line); ok {
			d.Rows = append(d.Rows, row)
		}
	}
	if len(hits) > 0 {
		d.From, d.To = offset+1, offset+len(hits)
	}
	q := fm.query()
	if q != "" {
		q += "&"
	}
	if offset > 0 {
		d.Prev = "/console/audit?" + q + "offset=" + strconv.Itoa(max(offset-pageSize, 0))
	}
	if offset+pageSize < total {
		d.Next = "/console/audit?" + q + "offset=" + strconv.Itoa(offset+pageSize)
	}
	d.Took = time.Since(start).Round(time.Millisecond).String()
	c.render(w, http.StatusOK, "audit", c.page(r, s, "Audit", d))
}

func escForm(f form) form {
	return form{esc(f.Client), esc(f.CallingAE), esc(f.CalledAE), esc(f.Event), esc(f.Decision), esc(f.Listener), esc(f.UID), esc(f.Since), esc(f.Until)}
}

// export streams the filtered records as JSON lines, as `dicomedge audit
// --json` prints them (control and bidirectional characters escaped).
func (c *Console) export(w http.ResponseWriter, r *http.Request, s *session) {
	_, f, err := c.parseFilter(r)
	if err != nil {
		http.Error(w, "400 "+esc(err.Error()), http.StatusBadRequest)
		return
	}
	c.audit(r, s, audit.EventConsoleAction, "export: "+r.URL.RawQuery)
	w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="audit-export.jsonl"`)
	_ = c.idx.Each(f, func(line []byte) error {
		if _, err := w.Write(audit.EscapeLine(line)); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	})
}

// ---- Record detail ----

type field struct{ Key, Value string }

type chainView struct {
	Seq                uint64
	Prev, Hash         string
	PrevOK, NextOK     string // "ok", "MISMATCH", or why it could not be checked
	PrevSeq, NextSeq   uint64
	HavePrev, HaveNext bool
}

type recordData struct {
	Seq         uint64
	Fields      []field
	JSON        string
	Chain       chainView
	Verify      verifyView
	Association bool
	Assoc       string
	Related     string // the audit page filtered to... (by seq range is not a filter; link by client)
}

func (c *Console) recordAt(r *http.Request) (int, []byte, error) {
	seq, err := strconv.ParseUint(r.URL.Query().Get("seq"), 10, 64)
	if err != nil {
		return -1, nil, fmt.Errorf("seq: want a record number")
	}
	pos := c.idx.BySeq(seq)
	if pos < 0 {
		return -1, nil, fmt.Errorf("no record with seq %d in the index", seq)
	}
	line, err := c.idx.Line(pos)
	return pos, line, err
}

func (c *Console) record(w http.ResponseWriter, r *http.Request, s *session) {
	pos, line, err := c.recordAt(r)
	if err != nil {
		c.render(w, http.StatusNotFound, "message", c.page(r, s, "Audit", map[string]any{"Title": "No such record", "Text": esc(err.Error())}))
		return
	}
	var e audit.Event
	if err := e.UnmarshalJSON(line); err != nil {
		c.render(w, http.StatusInternalServerError, "message", c.page(r, s, "Audit", map[string]any{"Title": "Unreadable record", "Text": esc(err.Error())}))
		return
	}
	c.wantVerify()
	d := recordData{Seq: e.Seq, JSON: string(audit.EscapeLine(line)), Verify: c.verify.view(),
		Association: e.Event == audit.EventAccepted || e.Event == audit.EventRejected, Assoc: esc(e.Assoc)}
	d.Fields = fields(&e)
	sum := sha256.Sum256(line)
	d.Chain = chainView{Seq: e.Seq, Prev: esc(e.Prev), Hash: hex.EncodeToString(sum[:])}
	switch {
	case e.Seq == 1:
		d.Chain.PrevOK = "first record: prev must be 64 zeros"
		if e.Prev == audit.ZeroHash {
			d.Chain.PrevOK = "ok (first record)"
		} else {
			d.Chain.PrevOK = "MISMATCH: the first record's prev is not 64 zeros"
		}
	case pos > 0:
		if pl, err := c.idx.Line(pos - 1); err == nil {
			ps := sha256.Sum256(pl)
			d.Chain.HavePrev, d.Chain.PrevSeq = true, e.Seq-1
			if hex.EncodeToString(ps[:]) == e.Prev {
				d.Chain.PrevOK = "ok: equals the SHA-256 of the previous record's line"
			} else {
				d.Chain.PrevOK = "MISMATCH: the previous record's line does not hash to this prev (altered, or a record between them removed)"
			}
		} else {
			d.Chain.PrevOK = "the previous record cannot be read: " + esc(err.Error())
		}
	default:
		d.Chain.PrevOK = "the previous record is not in the index (rotated away)"
	}
	if pos+1 < c.idx.Len() {
		if nl, err := c.idx.Line(pos + 1); err == nil {
			var n audit.Event
			if n.UnmarshalJSON(nl) == nil {
				d.Chain.HaveNext, d.Chain.NextSeq = true, n.Seq
				if n.Prev == d.Chain.Hash && n.Seq == e.Seq+1 {
					d.Chain.NextOK = "ok: the next record's prev is this line's hash"
				} else {
					d.Chain.NextOK = "MISMATCH: the next record does not chain to this one"
				}
			}
		}
	} else {
		d.Chain.NextOK = "this is the last record written"
	}
	c.render(w, http.StatusOK, "record", c.page(r, s, "Audit", d))
}

// fields lists a record's non-empty fields, escaped, in the line's order.
func fields(e *audit.Event) []field {
	var out []field
	add := func(k, v string) {
		if v != "" {
			out = append(out, field{k, esc(v)})
		}
	}
	add("time", e.Time.UTC().Format(audit.TimeFormat))
	add("event", e.Event)
	add("seq", strconv.FormatUint(e.Seq, 10))
	add("conn", e.Conn)
	add("assoc", e.Assoc)
	add("remote", e.Remote)
	if cl := e.Client; cl != nil {
		add("client.subject", cl.Subject)
		add("client.cn", cl.CN)
		add("client.dns", strings.Join(cl.DNS, ", "))
		add("client.uri", strings.Join(cl.URI, ", "))
		add("client.email", strings.Join(cl.Email, ", "))
		add("client.fingerprint", cl.Fingerprint)
		add("client.issuer", cl.Issuer)
		if !cl.NotAfter.IsZero() {
			add("client.not_after", fmtTime(cl.NotAfter))
		}
	}
	add("calling_ae", e.CallingAE)
	add("called_ae", e.CalledAE)
	add("listener", e.Listener)
	add("user", e.User)
	add("reason", e.Reason)
	add("rule", e.Rule)
	add("action", e.Action)
	add("backend", e.Backend)
	add("contexts", strings.Join(e.Contexts, ", "))
	if u := e.UserIdentity; u != nil {
		add("user_identity", u.Type+" "+u.User)
	}
	if e.Result != 0 {
		add("result/source/reason", fmt.Sprintf("%d/%d/%d %s %s", e.Result, e.Source, e.ReasonCode, e.ResultName, e.SourceName))
	}
	add("service", e.Service)
	add("sop_class", e.SOPClass)
	add("sop_instance", e.SOPInstance)
	add("study_uid", e.StudyUID)
	if e.MessageID != 0 {
		add("message_id", strconv.Itoa(e.MessageID))
	}
	add("status", e.Status)
	add("move_destination", e.MoveDestination)
	add("patient_id", e.PatientID)
	if e.Bytes != 0 {
		add("bytes", humanBytes(e.Bytes))
	}
	if e.MS != 0 {
		add("ms", strconv.FormatInt(e.MS, 10))
	}
	if e.Allowed != nil {
		add("allowed", strconv.FormatBool(*e.Allowed))
	}
	if e.BytesIn != 0 || e.BytesOut != 0 {
		add("bytes_in / bytes_out", humanBytes(e.BytesIn)+" / "+humanBytes(e.BytesOut))
	}
	add("abort_source", e.AbortSource)
	add("abort_reason", e.AbortReason)
	add("detail", e.Detail)
	add("prev", e.Prev)
	return out
}

// ---- Explain ----

type stepRow struct {
	Rule, Why string
	Matched   bool
}

type explainData struct {
	Seq                     uint64
	Event, Client, AE, When string
	Old, New                string
	Changed                 bool
	NotReplayed             string
	Steps                   []stepRow
	Deciding                string
	Policy                  string
}

func (c *Console) explain(w http.ResponseWriter, r *http.Request, s *session) {
	pos, line, err := c.recordAt(r)
	if err != nil {
		c.render(w, http.StatusNotFound, "message", c.page(r, s, "Audit", map[string]any{"Title": "No such record", "Text": esc(err.Error())}))
		return
	}
	var e audit.Event
	if err := e.UnmarshalJSON(line); err != nil || (e.Event != audit.EventAccepted && e.Event != audit.EventRejected) {
		c.render(w, http.StatusBadRequest, "message", c.page(r, s, "Audit", map[string]any{"Title": "Not an association record",
			"Text": "Explain decides an association.accepted or association.rejected record again."}))
		return
	}
	// The record as the CLI reads it: with what it inherits filled in.
	c.inherit(&e, pos)
	cfg := c.opt.Config()
	x := policytool.ExplainRecord(cfg, &e)
	d := explainData{Seq: e.Seq, Event: esc(e.Event), Client: esc(clientName(e.Client, hostOf(e.Remote))),
		AE: esc(e.CallingAE + "→" + e.CalledAE), When: fmtTime(e.Time), Old: esc(x.Old.String()), Policy: esc(cfg.Filename)}
	if x.NotReplayed != "" {
		d.NotReplayed = esc(x.NotReplayed)
	} else {
		d.New, d.Changed = esc(x.New.String()), x.Changed
		for _, st := range x.Explanation.Steps {
			d.Steps = append(d.Steps, stepRow{Rule: esc(st.Rule), Why: esc(st.Why), Matched: st.Matched})
			if st.Matched {
				d.Deciding = esc(st.Rule)
			}
		}
	}
	c.render(w, http.StatusOK, "explain", c.page(r, s, "Audit", d))
}

// ---- Chain verification ----

// verifyEvery is how often the whole chain is verified in the background
// (it reads every file: a 1,000,000-record log takes a few seconds).
const verifyEvery = 15 * time.Minute

type verifyView struct {
	Done    bool
	At      string
	Records int
	OK      bool
	Problem string
	Running bool
}

type verifyState struct {
	mu   chanMutex
	cur  verifyView
	kick chan struct{} // a page asks for a fresh verification
	last time.Time
}

// verifyAgainAfter: a page view asks for a new verification when the last
// one is older than this (and the log grew), so the status a reviewer sees
// is recent without verifying on every request.
const verifyAgainAfter = time.Minute

// want asks the verifier for a fresh run when the last one is old and
// records were added since; it never waits.
func (c *Console) wantVerify() {
	v := c.verify.view()
	if v.Running || (v.Done && v.Records >= c.idx.Len()) {
		return
	}
	c.verify.mu <- struct{}{}
	stale := time.Since(c.verify.last) > verifyAgainAfter
	<-c.verify.mu
	if !stale {
		return
	}
	select {
	case c.verify.kick <- struct{}{}:
	default:
	}
}

// chanMutex is a mutex made of a channel, so that the verifier can hold it
// across a long read without a page ever waiting on it (TryLock style).
type chanMutex chan struct{}

func (v *verifyState) view() verifyView {
	v.mu <- struct{}{}
	defer func() { <-v.mu }()
	return v.cur
}

func (v *verifyState) set(f func(*verifyView)) {
	v.mu <- struct{}{}
	defer func() { <-v.mu }()
	f(&v.cur)
}

func (c *Console) verifyLoop(ctx context.Context) {
	// Wait until the index has read the log, so the two do not compete for
	// the disk at start.
	for !c.idx.CaughtUp() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	for {
		c.verify.set(func(v *verifyView) { v.Running = true })
		n, err := audit.Verify(audit.Files(c.opt.AuditFile))
		now := c.opt.Now()
		c.verify.set(func(v *verifyView) {
			c.verify.last = time.Now()
			*v = verifyView{Done: true, At: fmtTime(now), Records: n, OK: err == nil}
			if err != nil {
				v.Problem = esc(err.Error())
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(verifyEvery):
		case <-c.verify.kick:
		}
	}
}
