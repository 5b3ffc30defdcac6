package console

import (
	"bufio"
	"context"
	"errors"
	"hash/maphash"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// The index keeps, for every record of the audit log, what the pages filter,
// count and sort on, in a few dozen bytes: where its line is (to read it
// back for display), its time and seq, and the ids of its interned values
// (AE titles, listener, client, event kind, rule), with the fields a record
// inherits from its association already filled in, as `dicomedge audit`
// fills them. A filter is then decided once per distinct value (a few
// hundred) with the CLI's own audit.Filter, and applied to the records as
// integer lookups: a million records in milliseconds. Aggregates (per-minute
// counts, clients, rules, last refusals) are updated as each record is
// indexed. The index follows the file (audit.FollowAt), so it is rebuilt
// from the log at start, in the background, and kept current as the writer
// appends; the console never writes the log.
type Index struct {
	file    string
	now     func() time.Time
	uidSeed maphash.Seed // uidHash's

	mu    sync.RWMutex
	recs  []rec
	files []fileRef // by rec.file

	strs    interner // AE titles, listener and rule names, event kinds' parts
	whos    []who    // by rec.who
	whoID   map[string]uint32
	kinds   []kind // by rec.kind
	kindID  map[kind]uint32
	lastPos audit.Position

	minutes  map[int64]*minute // unix minute → counts, the last 25 h
	refusals []int             // rec indexes of the last refusals, oldest first
	// deidUIDs holds the replaced UIDs of de-identified records (by rec
	// index): few records have them, so they are not in every rec.
	deidUIDs map[int][]uint64
	clients  map[string]*ClientStat
	rules    map[string]*RuleStat
	lastSeq  uint64

	caughtUp atomic.Bool // the log as it was at start is indexed
	err      atomic.Pointer[string]
}

// rec is one record in the index.
type rec struct {
	nano                                    int64
	off                                     int64
	seq                                     uint64
	uid, uid2                               uint64 // hashes of sop_instance and study_uid (uidHash); 0 = none
	file, kind, who                         uint32
	calling, called, listener, rule, length uint32
}

type fileRef struct {
	name     string // the name it was read under (a current file is renamed when it rotates)
	firstSeq uint64
}

// who is a record's client: its certificate identity and source host.
type who struct {
	client *audit.Client
	host   string
}

// kind is what the Event and Decision filters look at.
type kind struct {
	event   string
	action  string
	refused bool // a dimse record with allowed=false
}

type minute struct{ assoc, refused int }

// ClientStat is one identity seen in the trail.
type ClientStat struct {
	Client      audit.Client
	Host        string // the source address, for a client without a certificate (a plain listener)
	FirstSeen   time.Time
	LastSeen    time.Time
	Accepted    int
	Rejected    int
	TLSFailures int
	// Verified: an association record carries the certificate, so the
	// edge verified it. A certificate only ever presented in failed
	// handshakes is not: its names and dates are what a stranger claims.
	Verified bool
}

// RuleStat is one rule's traffic in the trail.
type RuleStat struct {
	Hits       int // associations it accepted
	Rejections int // associations it rejected
	LastUse    time.Time
}

type interner struct {
	ids  map[string]uint32
	vals []string
}

func (in *interner) id(s string) uint32 {
	if id, ok := in.ids[s]; ok {
		return id
	}
	if in.ids == nil {
		in.ids = map[string]uint32{}
	}
	id := uint32(len(in.vals))
	in.ids[s] = id
	in.vals = append(in.vals, s)
	return id
}

// NewIndex returns an empty index of the audit log file (and its rotated
// files); Run fills it.
func NewIndex(file string, now func() time.Time) *Index {
	if now == nil {
		now = time.Now
	}
	x := &Index{file: file, now: now, uidSeed: maphash.MakeSeed(), whoID: map[string]uint32{}, kindID: map[kind]uint32{},
		minutes: map[int64]*minute{}, deidUIDs: map[int][]uint64{}, clients: map[string]*ClientStat{}, rules: map[string]*RuleStat{}}
	x.strs.id("") // id 0 is the empty string
	x.who(nil, "")
	return x
}

// indexPoll is how often the index looks for new records once it has read
// the log: the overview's counts lag the writer by at most this.
const indexPoll = 200 * time.Millisecond

// Run indexes the log from its first record, then follows it until ctx is
// done. It marks the index caught up when it has read what the log held at
// start.
func (x *Index) Run(ctx context.Context) error {
	var target uint64
	if last, ok := lastSeqOf(x.file); ok {
		target = last
	}
	if target == 0 {
		x.caughtUp.Store(true)
	}
	err := audit.FollowAt(ctx, x.file, audit.Filter{}, indexPoll, func(e audit.Event, line []byte, p audit.Position) error {
		x.add(&e, line, p)
		if !x.caughtUp.Load() && e.Seq >= target {
			x.caughtUp.Store(true)
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s := err.Error()
		x.err.Store(&s)
	}
	return err
}

// CaughtUp reports whether the log as it was at start is indexed; until
// then pages say how far the index is.
func (x *Index) CaughtUp() bool { return x.caughtUp.Load() }

// Len is the number of records indexed.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.recs)
}

// lastSeqOf reads the seq of the last complete record of the log.
func lastSeqOf(file string) (uint64, bool) {
	files := audit.Files(file)
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.Open(files[i])
		if err != nil {
			continue
		}
		st, _ := f.Stat()
		size := st.Size()
		start := max(size-(1<<20), 0)
		b := make([]byte, size-start)
		_, err = f.ReadAt(b, start)
		f.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		b = b[:max(strings.LastIndexByte(string(b), '\n'), 0)]
		if j := strings.LastIndexByte(string(b), '\n'); j >= 0 {
			b = b[j+1:]
		}
		if s, ok := seqOf(b); ok {
			return s, true
		}
	}
	return 0, false
}

// seqOf reads the seq of a record line without decoding it all.
func seqOf(line []byte) (uint64, bool) {
	i := strings.Index(string(line), `,"seq":`)
	if i < 0 {
		return 0, false
	}
	var n uint64
	j := i + len(`,"seq":`)
	digits := 0
	for ; j < len(line) && line[j] >= '0' && line[j] <= '9'; j++ {
		n = n*10 + uint64(line[j]-'0')
		digits++
	}
	return n, digits > 0
}

func (x *Index) who(c *audit.Client, host string) uint32 {
	key := host
	if c != nil {
		key = c.Fingerprint + "\x00" + c.Subject + "\x00" + c.CN + "\x00" + host
	}
	if id, ok := x.whoID[key]; ok {
		return id
	}
	id := uint32(len(x.whos))
	x.whoID[key] = id
	x.whos = append(x.whos, who{client: c, host: host})
	return id
}

// uidHash is what the index keeps of a UID and matches a UID filter by. A
// client chooses the UIDs it sends: seeded per index, the hash gives it no
// way to make a UID of its own collide with another's, and so show up in a
// reviewer's search for that one.
func (x *Index) uidHash(s string) uint64 {
	if s == "" {
		return 0
	}
	return maphash.String(x.uidSeed, s) | 1
}

// refusal reports whether e is a refusal the overview counts: a rejected
// association, a failed handshake or a refused connection.
func refusal(e *audit.Event) bool {
	switch e.Event {
	case audit.EventRejected, audit.EventTLSFailed, audit.EventConnectionRefused:
		return true
	}
	return false
}

// maxRefusals is how many of the last refusals the overview lists.
const maxRefusals = 25

func (x *Index) add(e *audit.Event, line []byte, p audit.Position) {
	x.mu.Lock()
	defer x.mu.Unlock()
	// A new file: another name, or the same name starting again (the
	// current file, rotated and created anew).
	if len(x.files) == 0 || p.File != x.lastPos.File || p.Offset < x.lastPos.Offset {
		x.files = append(x.files, fileRef{name: p.File, firstSeq: e.Seq})
	}
	x.lastPos = p
	host, _, err := net.SplitHostPort(e.Remote)
	if err != nil {
		host = e.Remote
	}
	k := kind{event: e.Event, action: e.Action, refused: e.Allowed != nil && !*e.Allowed}
	kid, ok := x.kindID[k]
	if !ok {
		kid = uint32(len(x.kinds))
		x.kindID[k] = kid
		x.kinds = append(x.kinds, k)
	}
	r := rec{
		nano: e.Time.UnixNano(), off: p.Offset, seq: e.Seq, length: uint32(len(line)),
		file: uint32(len(x.files) - 1), kind: kid, who: x.who(e.Client, host),
		calling: x.strs.id(e.CallingAE), called: x.strs.id(e.CalledAE), listener: x.strs.id(e.Listener),
		rule: x.strs.id(e.Rule), uid: x.uidHash(e.SOPInstance), uid2: x.uidHash(e.StudyUID),
	}
	x.recs = append(x.recs, r)
	x.lastSeq = e.Seq
	if d := e.Deidentified; d != nil {
		var hs []uint64
		for _, u := range []string{d.StudyUID, d.SeriesUID, d.SOPInstance, d.OriginalSeries} {
			if h := x.uidHash(u); h != 0 {
				hs = append(hs, h)
			}
		}
		if len(hs) > 0 {
			x.deidUIDs[len(x.recs)-1] = hs
		}
	}

	// Aggregates.
	t := e.Time
	m := t.Unix() / 60
	if t.After(x.now().Add(-25 * time.Hour)) {
		b := x.minutes[m]
		if b == nil {
			b = &minute{}
			x.minutes[m] = b
			if len(x.minutes) > 25*60+10 {
				x.pruneMinutes()
			}
		}
		switch {
		case e.Event == audit.EventAccepted:
			b.assoc++
		case refusal(e):
			b.refused++
		}
	}
	if refusal(e) {
		x.refusals = append(x.refusals, len(x.recs)-1)
		if len(x.refusals) > 2*maxRefusals {
			x.refusals = append(x.refusals[:0], x.refusals[len(x.refusals)-maxRefusals:]...)
		}
	}
	switch e.Event {
	case audit.EventAccepted, audit.EventRejected, audit.EventTLSFailed:
		key, cs := "", (*ClientStat)(nil)
		switch {
		case e.Client != nil && e.Client.Fingerprint != "":
			key = e.Client.Fingerprint
		case e.Client != nil:
			key = "subject:" + e.Client.Subject
		case e.Event != audit.EventTLSFailed && host != "":
			key = "host:" + host // a plain listener's client is its address
		}
		if key != "" {
			if cs = x.clients[key]; cs == nil {
				cs = &ClientStat{FirstSeen: t}
				if e.Client != nil {
					cs.Client = *e.Client
				} else {
					cs.Host = host
				}
				x.clients[key] = cs
			}
			if t.After(cs.LastSeen) {
				cs.LastSeen = t
			}
			if e.Client != nil && e.Event != audit.EventTLSFailed && !cs.Verified {
				// The verified certificate's own fields, rather than those a
				// failed handshake recorded first (cut to 512 bytes, 8 SANs).
				cs.Client, cs.Verified = *e.Client, true
			}
			if e.Client != nil && !e.Client.NotAfter.IsZero() {
				cs.Client.NotAfter = e.Client.NotAfter
			}
			switch e.Event {
			case audit.EventAccepted:
				cs.Accepted++
			case audit.EventRejected:
				cs.Rejected++
			case audit.EventTLSFailed:
				cs.TLSFailures++
			}
		}
		if e.Rule != "" && e.Event != audit.EventTLSFailed {
			rs := x.rules[e.Rule]
			if rs == nil {
				rs = &RuleStat{}
				x.rules[e.Rule] = rs
			}
			if e.Event == audit.EventAccepted {
				rs.Hits++
			} else {
				rs.Rejections++
			}
			if t.After(rs.LastUse) {
				rs.LastUse = t
			}
		}
	}
}

func (x *Index) pruneMinutes() {
	cut := x.now().Add(-25*time.Hour).Unix() / 60
	for m := range x.minutes {
		if m < cut {
			delete(x.minutes, m)
		}
	}
}

// Series is the per-minute counts of the 24 hours before now, oldest first.
func (x *Index) Series(now time.Time) (assoc, refused []int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	end := now.Unix() / 60
	assoc, refused = make([]int, 24*60), make([]int, 24*60)
	for i := range assoc {
		if b := x.minutes[end-int64(len(assoc)-1-i)]; b != nil {
			assoc[i], refused[i] = b.assoc, b.refused
		}
	}
	return assoc, refused
}

// Filter is what the audit page selects: the CLI's filters (audit.Filter,
// with its wildcards and case rules, and its exact UID).
type Filter = audit.Filter

// match is a filter compiled against the index's distinct values.
type match struct {
	since, until int64
	kinds        []bool
	whos         []bool
	calling      []bool
	called       []bool
	listener     []bool
	uid          uint64
}

// compile decides f once per distinct value, with the CLI's own
// audit.Filter: a filter is a conjunction of one test per field, so each
// field's test can be made on a record holding only that field.
func (x *Index) compile(f Filter) *match {
	m := &match{}
	if !f.Since.IsZero() {
		m.since = f.Since.UnixNano()
	}
	if !f.Until.IsZero() {
		m.until = f.Until.UnixNano()
	}
	if f.Event != "" || f.Decision != "" {
		sub := audit.Filter{Event: f.Event, Decision: f.Decision}
		m.kinds = make([]bool, len(x.kinds))
		for i, k := range x.kinds {
			e := audit.Event{Event: k.event, Action: k.action}
			if k.refused {
				e.Allowed = audit.Bool(false)
			}
			m.kinds[i] = sub.Match(&e)
		}
	}
	if f.Client != "" {
		sub := audit.Filter{Client: f.Client}
		m.whos = make([]bool, len(x.whos))
		for i, w := range x.whos {
			e := audit.Event{Client: w.client}
			if w.host != "" {
				e.Remote = net.JoinHostPort(w.host, "0")
			}
			m.whos[i] = sub.Match(&e)
		}
	}
	strMatch := func(pattern string, mk func(v string) audit.Event, sub audit.Filter) []bool {
		if pattern == "" {
			return nil
		}
		out := make([]bool, len(x.strs.vals))
		for i, v := range x.strs.vals {
			e := mk(v)
			out[i] = sub.Match(&e)
		}
		return out
	}
	m.calling = strMatch(f.CallingAE, func(v string) audit.Event { return audit.Event{CallingAE: v} }, audit.Filter{CallingAE: f.CallingAE})
	m.called = strMatch(f.CalledAE, func(v string) audit.Event { return audit.Event{CalledAE: v} }, audit.Filter{CalledAE: f.CalledAE})
	m.listener = strMatch(f.Listener, func(v string) audit.Event { return audit.Event{Listener: v} }, audit.Filter{Listener: f.Listener})
	if f.UID != "" {
		m.uid = x.uidHash(strings.TrimSpace(f.UID))
	}
	return m
}

func (m *match) ok(x *Index, i int) bool {
	r := &x.recs[i]
	switch {
	case m.since != 0 && r.nano < m.since, m.until != 0 && r.nano >= m.until:
		return false
	case m.kinds != nil && !m.kinds[r.kind]:
		return false
	case m.whos != nil && !m.whos[r.who]:
		return false
	case m.calling != nil && !m.calling[r.calling]:
		return false
	case m.called != nil && !m.called[r.called]:
		return false
	case m.listener != nil && !m.listener[r.listener]:
		return false
	case m.uid != 0 && r.uid != m.uid && r.uid2 != m.uid:
		for _, h := range x.deidUIDs[i] {
			if h == m.uid {
				return true
			}
		}
		return false
	}
	return true
}

// Hit is a selected record: its place in the index and its line.
type Hit struct {
	Pos  int
	Seq  uint64
	Line []byte
}

// Query returns the total number of records f selects and, newest first,
// up to limit of them after skipping offset, with their lines.
func (x *Index) Query(f Filter, offset, limit int) (int, []Hit, error) {
	x.mu.RLock()
	m := x.compile(f)
	total := 0
	var picked []int
	for i := len(x.recs) - 1; i >= 0; i-- {
		if !m.ok(x, i) {
			continue
		}
		if total >= offset && len(picked) < limit {
			picked = append(picked, i)
		}
		total++
	}
	x.mu.RUnlock()
	hits := make([]Hit, 0, len(picked))
	for _, i := range picked {
		line, err := x.Line(i)
		if err != nil {
			return total, hits, err
		}
		hits = append(hits, Hit{Pos: i, Seq: x.recAt(i).seq, Line: line})
	}
	return total, hits, nil
}

// Each calls fn for every record f selects, oldest first (the export).
func (x *Index) Each(f Filter, fn func(line []byte) error) error {
	x.mu.RLock()
	m := x.compile(f)
	var picked []int
	for i := range x.recs {
		if m.ok(x, i) {
			picked = append(picked, i)
		}
	}
	x.mu.RUnlock()
	var r lineReader
	defer r.close()
	for _, i := range picked {
		line, err := r.read(x, i)
		if err != nil {
			return err
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

func (x *Index) recAt(i int) rec {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.recs[i]
}

// BySeq returns the position of the record with seq, or -1.
func (x *Index) BySeq(seq uint64) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i := sort.Search(len(x.recs), func(i int) bool { return x.recs[i].seq >= seq })
	if i < len(x.recs) && x.recs[i].seq == seq {
		return i
	}
	return -1
}

// Context returns the record at pos decoded with the fields it inherits
// from its association, as the audit page lists it.
func (x *Index) Context(pos int) (calling, called, listener string, c *audit.Client, host string) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.recs[pos]
	w := x.whos[r.who]
	return x.strs.vals[r.calling], x.strs.vals[r.called], x.strs.vals[r.listener], w.client, w.host
}

// Line reads the line of the record at pos.
func (x *Index) Line(pos int) ([]byte, error) {
	var r lineReader
	defer r.close()
	return r.read(x, pos)
}

// lineReader reads records' lines, keeping the last file open.
type lineReader struct {
	id   uint32
	f    *os.File
	open bool
}

func (lr *lineReader) close() {
	if lr.f != nil {
		lr.f.Close()
	}
}

var errRecordGone = errors.New("the record's file is no longer there (rotated away or removed)")

func (lr *lineReader) read(x *Index, pos int) ([]byte, error) {
	x.mu.RLock()
	r := x.recs[pos]
	ref := x.files[r.file]
	x.mu.RUnlock()
	if !lr.open || lr.id != r.file {
		lr.close()
		lr.f, lr.open = nil, false
		f, err := x.openFile(r.file, ref)
		if err != nil {
			return nil, err
		}
		lr.f, lr.id, lr.open = f, r.file, true
	}
	b := make([]byte, r.length)
	if _, err := lr.f.ReadAt(b, r.off); err != nil {
		return nil, err
	}
	return b, nil
}

// openFile opens the file a record was read from. Its name may have
// changed since (the current file rotates to FILE.N): the file is the one
// whose first record has the seq noted when it was indexed.
func (x *Index) openFile(id uint32, ref fileRef) (*os.File, error) {
	try := func(name string) *os.File {
		f, err := os.Open(name)
		if err != nil {
			return nil
		}
		br := bufio.NewReaderSize(f, 4096)
		line, err := br.ReadSlice('\n')
		if s, ok := seqOf(line); err == nil && ok && s == ref.firstSeq {
			return f
		}
		f.Close()
		return nil
	}
	if f := try(ref.name); f != nil {
		return f, nil
	}
	for _, name := range audit.Files(x.file) {
		if f := try(name); f != nil {
			x.mu.Lock()
			x.files[id].name = name
			x.mu.Unlock()
			return f, nil
		}
	}
	return nil, errRecordGone
}

// Refusals returns the positions of the last refusals, newest first.
func (x *Index) Refusals(n int) []int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]int, 0, n)
	for i := len(x.refusals) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, x.refusals[i])
	}
	return out
}

// Clients returns every identity seen, those whose certificate expires
// within soon first (soonest first), then the most recently seen.
func (x *Index) Clients(now time.Time, soon time.Duration) []ClientStat {
	x.mu.RLock()
	out := make([]ClientStat, 0, len(x.clients))
	for _, c := range x.clients {
		out = append(out, *c)
	}
	x.mu.RUnlock()
	// Only a verified certificate's expiry puts it first: anyone can
	// present a certificate with a known client's name that expires
	// tomorrow, and push the real ones down the list.
	expiring := func(c *ClientStat) bool {
		return c.Verified && !c.Client.NotAfter.IsZero() && c.Client.NotAfter.Before(now.Add(soon))
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		ea, eb := expiring(a), expiring(b)
		switch {
		case ea != eb:
			return ea
		case ea:
			return a.Client.NotAfter.Before(b.Client.NotAfter)
		case !a.LastSeen.Equal(b.LastSeen):
			return a.LastSeen.After(b.LastSeen)
		}
		return a.Client.Fingerprint+a.Host < b.Client.Fingerprint+b.Host
	})
	return out
}

// Rules returns the traffic of every rule named in the trail.
func (x *Index) Rules() map[string]RuleStat {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make(map[string]RuleStat, len(x.rules))
	for k, v := range x.rules {
		out[k] = *v
	}
	return out
}

// Err is the error that stopped indexing, if any.
func (x *Index) Err() string {
	if p := x.err.Load(); p != nil {
		return *p
	}
	return ""
}
