package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Files returns the chain for file in order: the rotated files File.1,
// File.2, ... (numeric order, oldest first), then File itself. File is
// included when it exists or when nothing was rotated (so that readers
// report it missing).
func Files(file string) []string {
	matches, _ := filepath.Glob(globEscape(file) + ".*")
	type rf struct {
		path string
		n    int
	}
	var rot []rf
	for _, m := range matches {
		if ok, n := rotatedIndex(file, m); ok {
			rot = append(rot, rf{m, n})
		}
	}
	sort.Slice(rot, func(i, j int) bool { return rot[i].n < rot[j].n })
	out := make([]string, 0, len(rot)+1)
	for _, r := range rot {
		out = append(out, r.path)
	}
	if _, err := os.Stat(file); err == nil || len(out) == 0 {
		out = append(out, file)
	}
	return out
}

// rotatedIndex reports whether path is file.N (N a positive decimal) and N.
func rotatedIndex(file, path string) (bool, int) {
	suf, ok := strings.CutPrefix(path, file+".")
	if !ok || suf == "" || suf[0] == '0' {
		return false, 0
	}
	n, err := strconv.Atoi(suf)
	if err != nil || n <= 0 {
		return false, 0
	}
	return true, n
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Filter selects records for review. Empty fields match everything; text
// fields accept * and ? wildcards and compare case-insensitively.
type Filter struct {
	Since, Until time.Time // Since inclusive, Until exclusive
	Client       string    // matches the client's CN, subject, a DNS/URI/email SAN, the fingerprint or the remote IP
	CallingAE    string
	CalledAE     string
	Listener     string // the listener's name
	Event        string // e.g. "dimse", "association.*"
	Decision     string // see Decision; also "accept", "rejected", "refused", ...
	// UID matches a record naming it as its SOP instance, study or (on a
	// de-identified record) any replaced UID: original or replacement.
	UID string
}

// namesUID reports whether e names uid, original or replaced.
func namesUID(e *Event, uid string) bool {
	if e.SOPInstance == uid || e.StudyUID == uid {
		return true
	}
	d := e.Deidentified
	return d != nil && (d.StudyUID == uid || d.SeriesUID == uid || d.SOPInstance == uid || d.OriginalSeries == uid)
}

// Decision names what the edge decided for e: the action ("relay" or
// "answer") for an accepted association, "reject" for a rejected one, a
// failed TLS handshake or a refused connection, "allow" or "refuse" for a DIMSE request, and "" for
// events that carry no decision.
func Decision(e *Event) string {
	switch e.Event {
	case EventAccepted:
		if e.Action != "" {
			return e.Action
		}
		return "accept"
	case EventRejected, EventTLSFailed, EventConnectionRefused:
		return "reject"
	case EventDIMSE:
		if e.Allowed != nil && !*e.Allowed {
			return "refuse"
		}
		return "allow"
	}
	return ""
}

var decisionAliases = map[string][]string{
	"accept": {"relay", "answer", "accept"}, "accepted": {"relay", "answer", "accept"},
	"rejected": {"reject"}, "deny": {"reject", "refuse"}, "denied": {"reject", "refuse"},
	"allowed": {"allow"}, "refused": {"refuse"},
}

// Match reports whether f selects e, as ReadFiles and `dicomedge audit`
// decide it (after the association's earlier records filled e in).
func (f *Filter) Match(e *Event) bool { return f.match(e) }

func (f *Filter) match(e *Event) bool {
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	if f.Event != "" && !glob(f.Event, e.Event) {
		return false
	}
	if f.CallingAE != "" && !glob(strings.TrimSpace(f.CallingAE), strings.TrimSpace(e.CallingAE)) {
		return false
	}
	if f.CalledAE != "" && !glob(strings.TrimSpace(f.CalledAE), strings.TrimSpace(e.CalledAE)) {
		return false
	}
	if f.Listener != "" && !glob(f.Listener, e.Listener) {
		return false
	}
	if f.UID != "" && !namesUID(e, strings.TrimSpace(f.UID)) {
		return false
	}
	if f.Decision != "" {
		d := Decision(e)
		want := strings.ToLower(f.Decision)
		ok := d == want
		for _, a := range decisionAliases[want] {
			ok = ok || d == a
		}
		if !ok {
			return false
		}
	}
	if f.Client != "" {
		ok := false
		if host, _, err := net.SplitHostPort(e.Remote); err == nil {
			ok = glob(f.Client, host)
		}
		if c := e.Client; c != nil {
			ok = ok || glob(f.Client, c.CN) || glob(f.Client, c.Subject) || glob(f.Client, c.Fingerprint)
			for _, l := range [][]string{c.DNS, c.URI, c.Email} {
				for _, v := range l {
					ok = ok || glob(f.Client, v)
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// glob matches s against pattern with * (any run) and ? (one byte),
// case-insensitively. Iterative with one backtrack point: linear time.
func glob(pattern, s string) bool {
	p, t := strings.ToLower(pattern), strings.ToLower(s)
	pi, ti, star, mark := 0, 0, -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// assocContext remembers who an association belongs to, so that its later
// events (DIMSE, release) match --client and AE filters and show in the
// table even when the proxy did not repeat those fields on every record.
type assocContext struct {
	client                              *Client
	callingAE, called, remote, listener string
}

// maxTracked bounds the association map against hostile or huge logs.
const maxTracked = 1 << 16

type tracker map[string]assocContext

func (tr tracker) fill(e *Event) {
	if e.Assoc == "" {
		return
	}
	ctx, ok := tr[e.Assoc]
	if !ok {
		if e.Client != nil || e.CallingAE != "" {
			if len(tr) >= maxTracked {
				clear(tr)
			}
			tr[e.Assoc] = assocContext{e.Client, e.CallingAE, e.CalledAE, e.Remote, e.Listener}
		}
	} else {
		if e.Client == nil {
			e.Client = ctx.client
		}
		if e.CallingAE == "" {
			e.CallingAE = ctx.callingAE
		}
		if e.CalledAE == "" {
			e.CalledAE = ctx.called
		}
		if e.Remote == "" {
			e.Remote = ctx.remote
		}
		if e.Listener == "" {
			e.Listener = ctx.listener
		}
	}
	switch e.Event {
	case EventReleased, EventAborted, EventRejected:
		delete(tr, e.Assoc)
	}
}

// ReadFiles reads the records of paths in order and calls fn for each one
// that f selects, with the decoded event and its raw line (no newline).
// Fields an event inherits from its association (client, AE titles) are
// filled in from the association's earlier records. An incomplete last line
// (a record still being written) is not returned. Lines that are not JSON
// records are skipped and reported at the end as a *BadLinesError; fn's
// error stops the read.
func ReadFiles(paths []string, f Filter, fn func(Event, []byte) error) error {
	s := newScanner(f, fn)
	for _, p := range paths {
		if err := s.readFile(p); err != nil {
			return err
		}
	}
	if s.bad.Count > 0 {
		return &s.bad
	}
	return nil
}

// BadLinesError reports lines ReadFiles skipped because they are not audit
// records (a torn write, an edit); every good record was still delivered.
type BadLinesError struct {
	Count int
	First string // file:line: why
}

func (e *BadLinesError) Error() string {
	return fmt.Sprintf("skipped %d line(s) that are not audit records, first %s (run `dicomedge audit verify`)", e.Count, e.First)
}

func (e *BadLinesError) add(file string, line int, why string) {
	if e.Count == 0 {
		e.First = fmt.Sprintf("%s:%d: %s", file, line, why)
	}
	e.Count++
}

// scanner decodes, filters and hands on records, keeping the association
// context across files. Lines that are not records are counted and skipped:
// one torn write after a crash must not hide everything after it.
type scanner struct {
	f   Filter
	fn  func(Event, []byte) error
	tr  tracker
	bad BadLinesError
	// at, when set, is called instead of fn with where each line is: the
	// file's name and the line's offset in it (base + what read consumed).
	at   func(Event, []byte, Position) error
	base int64
}

// Position is where a record's line starts: the file's name when it was
// read (a current file is renamed when it rotates) and the byte offset.
type Position struct {
	File   string
	Offset int64
}

func newScanner(f Filter, fn func(Event, []byte) error) *scanner {
	return &scanner{f: f, fn: fn, tr: tracker{}}
}

func (s *scanner) readFile(p string) error {
	fh, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer fh.Close()
	_, _, err = s.read(fh, p, 0)
	return err
}

// read consumes the complete lines of r, numbered after firstLine, and
// returns the bytes and lines consumed.
func (s *scanner) read(r io.Reader, name string, firstLine int) (int64, int, error) {
	last := firstLine
	n, err := readLines(r, name, firstLine, func(line []byte, ln int, off int64) error {
		last = ln
		var e Event
		if line == nil {
			s.bad.add(name, ln, fmt.Sprintf("longer than %d bytes", maxLine))
			return nil
		}
		if err := decodeEvent(line, &e); err != nil {
			s.bad.add(name, ln, err.Error())
			return nil
		}
		s.tr.fill(&e)
		if !s.f.match(&e) {
			return nil
		}
		if s.at != nil {
			return s.at(e, line, Position{File: name, Offset: s.base + off})
		}
		return s.fn(e, line)
	})
	return n, last, err
}

// readLines calls fn for each complete line of r (numbered from firstLine+1,
// without its newline, and the offset in r where it starts) and returns the
// number of bytes consumed, which stops before a trailing incomplete line. A
// line longer than maxLine is skipped without buffering it and passed to fn
// as nil.
func readLines(r io.Reader, name string, firstLine int, fn func(line []byte, n int, off int64) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var consumed, skipped int64
	n := firstLine
	var long []byte
	skipping := false
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			switch {
			case skipping:
				skipped += int64(len(chunk))
			case len(long)+len(chunk) > maxLine:
				skipping, skipped, long = true, int64(len(long)+len(chunk)), nil
			default:
				long = append(long, chunk...)
			}
			continue
		}
		if err == io.EOF {
			return consumed, nil // incomplete tail (or nothing) left for later
		}
		if err != nil {
			return consumed, fmt.Errorf("audit: %s: %w", name, err)
		}
		n++
		if skipping {
			consumed += skipped + int64(len(chunk))
			skipping, skipped = false, 0
			if err := fn(nil, n, consumed); err != nil {
				return consumed, err
			}
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		consumed += int64(len(line))
		if err := fn(line[:len(line)-1], n, consumed-int64(len(line))); err != nil {
			return consumed, err
		}
	}
}

// VerifyError locates the first record at which a chain is broken.
type VerifyError struct {
	File   string
	Line   int    // 1-based; 0 when the problem is the file as a whole
	Seq    uint64 // the seq this line should carry
	Reason string
}

func (e *VerifyError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s:%d: seq %d: %s", e.File, e.Line, e.Seq, e.Reason)
}

// ErrNoHeadAnchor is matched (errors.Is) by Verify's error when every
// record chained but the head anchor file is missing, as for a copy of the
// log made without it: records cut from the end cannot be ruled out, but
// nothing shows tampering either. The error is also a *VerifyError.
var ErrNoHeadAnchor = errors.New("audit: no head anchor")

// ErrAnchorMismatch is matched (errors.Is) by Verify's error when every
// record chained but the range holds an audit.anchor_mismatch record: the
// edge found, on opening the log, that records had been cut or the anchor
// removed. The error is also a *VerifyError naming the first such record.
var ErrAnchorMismatch = errors.New("audit: anchor mismatch recorded")

type anchorMismatchFound struct{ ve *VerifyError }

func (a anchorMismatchFound) Error() string   { return a.ve.Error() }
func (a anchorMismatchFound) Unwrap() []error { return []error{a.ve, ErrAnchorMismatch} }

type anchorMissing struct{ ve *VerifyError }

func (a anchorMissing) Error() string   { return a.ve.Error() }
func (a anchorMissing) Unwrap() []error { return []error{a.ve, ErrNoHeadAnchor} }

// Verify checks the hash chain across paths (in order, as Files returns
// them) and, when the last path has one, against its head anchor
// (File.head), which catches records deleted from the end and an edited
// last record. It returns the number of records checked and a *VerifyError
// for the first bad record: an edit shows as the next record's prev not
// matching, a deletion or insertion as a seq or prev mismatch, a cut as an
// incomplete last line or a chain that ends before the anchor.
func Verify(paths []string) (int, error) {
	if len(paths) == 0 {
		return 0, errors.New("audit: no files to verify")
	}
	lastFile := paths[len(paths)-1]
	logFile := anchoredLog(lastFile)
	h, err := readHead(logFile)
	if err != nil {
		return 0, &VerifyError{File: headPath(logFile), Reason: err.Error()}
	}
	srcs := make([]source, 0, len(paths))
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			return 0, &VerifyError{File: p, Reason: err.Error()}
		}
		defer fh.Close()
		st, err := fh.Stat()
		if err != nil {
			return 0, &VerifyError{File: p, Reason: err.Error()}
		}
		srcs = append(srcs, source{p, fh, st.Size()})
	}
	return verify(srcs, h, headPath(logFile))
}

// anchoredLog names the log whose anchor judges a chain ending in
// lastFile. The anchor is FILE.head, kept beside the current file; when
// the current file is gone (removed, or moved aside as FILE.N while the
// edge was stopped), Files ends with the newest rotated file, FILE.N,
// which has no anchor of its own: FILE's anchor then still says how far
// the chain went.
func anchoredLog(lastFile string) string {
	i := strings.LastIndexByte(lastFile, '.')
	if i <= 0 {
		return lastFile
	}
	base := lastFile[:i]
	if ok, _ := rotatedIndex(base, lastFile); !ok {
		return lastFile
	}
	if _, err := os.Stat(headPath(lastFile)); !errors.Is(err, os.ErrNotExist) {
		return lastFile // a log whose own name ends in .N, with its anchor
	}
	if _, err := os.Stat(headPath(base)); err != nil {
		return lastFile
	}
	return base
}

// source is one file of a chain, opened.
type source struct {
	name string
	r    io.Reader
	size int64
}

// verify is Verify on open sources (the fuzzer feeds it from memory).
func verify(srcs []source, h *head, headName string) (int, error) {
	var (
		n       int
		want    uint64 = 1
		prev           = ZeroHash
		prevLoc string
		anchor  struct {
			found      bool
			hash, file string
			line       int
		}
		lastFile = srcs[len(srcs)-1].name
		// the audit.anchor_mismatch records in the range: how many, the first
		mismatches int
		mismatch   *VerifyError
	)
	for fi, src := range srcs {
		p := src.name
		lineNo := 0
		consumed, err := readLines(src.r, p, 0, func(line []byte, ln int, _ int64) error {
			lineNo = ln
			if line == nil {
				return &VerifyError{p, ln, want, fmt.Sprintf("line longer than %d bytes", maxLine)}
			}
			var r struct {
				Seq    *uint64 `json:"seq"`
				Prev   *string `json:"prev"`
				Event  string  `json:"event"`
				Time   string  `json:"time"`
				Detail string  `json:"detail"`
			}
			if err := json.Unmarshal(line, &r); err != nil {
				return &VerifyError{p, ln, want, "not a JSON record (" + err.Error() + ")"}
			}
			if r.Seq == nil || r.Prev == nil || r.Event == "" || r.Time == "" {
				return &VerifyError{p, ln, want, "record lacks seq, prev, event or time"}
			}
			if *r.Seq != want {
				what := "records are missing before it (deleted?)"
				if *r.Seq < want {
					what = "a record was inserted or duplicated"
				}
				if n == 0 && fi == 0 && want == 1 {
					what = "the chain does not start at seq 1 (earlier files or records are missing)"
				}
				return &VerifyError{p, ln, want, fmt.Sprintf("has seq %d, expected %d: %s", *r.Seq, want, what)}
			}
			if *r.Prev != prev {
				what := "the previous record " + prevLoc + " was altered, or a record between them was deleted or inserted"
				if prevLoc == "" {
					what = "the first record must have prev of 64 zeros"
				}
				return &VerifyError{p, ln, want, "prev does not match the hash of the previous line: " + what}
			}
			if r.Event == EventAnchorMismatch {
				if mismatches++; mismatch == nil {
					// The detail is read from the log, which whoever
					// tampered with it can write: shown escaped, as in
					// the table, since verify's message is printed.
					mismatch = &VerifyError{p, ln, want, "audit.anchor_mismatch: when it opened the log the edge " + Escape(r.Detail)}
				}
			}
			sum := sha256.Sum256(line)
			prev = hex.EncodeToString(sum[:])
			prevLoc = fmt.Sprintf("(%s:%d seq %d)", p, ln, want)
			if h != nil && want == h.Seq {
				anchor.found, anchor.hash, anchor.file, anchor.line = true, prev, p, ln
			}
			n++
			want++
			return nil
		})
		if err != nil {
			var ve *VerifyError
			if errors.As(err, &ve) {
				return n, ve
			}
			return n, &VerifyError{File: p, Line: lineNo + 1, Seq: want, Reason: err.Error()}
		}
		if consumed < src.size {
			return n, &VerifyError{p, lineNo + 1, want, "incomplete last record: the file was truncated or a write was cut short"}
		}
	}
	switch {
	case h == nil && n > 0 && mismatch == nil:
		return n, anchorMissing{&VerifyError{File: headName,
			Reason: "missing: without the head anchor, records deleted from the end cannot be ruled out"}}
	case h == nil:
	case h.Seq == 0 && h.Hash != ZeroHash:
		// Seq 0 is the empty chain, whose hash is ZeroHash; the writer
		// takes any other as an altered anchor, and so does verify.
		return n, &VerifyError{File: headName, Reason: "records seq 0, the empty log, with a hash other than " + ZeroHash + ": the anchor was altered"}
	case h.Seq == 0:
	case !anchor.found:
		return n, &VerifyError{File: lastFile, Line: 0, Seq: want,
			Reason: fmt.Sprintf("truncated: the chain ends at seq %d but %s records seq %d", want-1, headName, h.Seq)}
	case anchor.hash != h.Hash:
		return n, &VerifyError{File: anchor.file, Line: anchor.line, Seq: h.Seq,
			Reason: "does not match the hash recorded in " + headName + ": the record was altered"}
	}
	if mismatch != nil {
		if mismatches > 1 {
			mismatch.Reason += fmt.Sprintf(" (and %d more audit.anchor_mismatch records)", mismatches-1)
		}
		if h == nil && n > 0 {
			mismatch.Reason += "; " + headName + " is missing too"
		}
		return n, anchorMismatchFound{mismatch}
	}
	return n, nil
}
