package console

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// genLog writes n records of realistic traffic through the audit writer,
// spread over the day before end: associations of a few dozen clients (some
// rejected, some with a few DIMSE requests), failed handshakes, refused
// connections. It returns the file.
func genLog(tb testing.TB, dir string, n int, end time.Time, rotate int64) string {
	tb.Helper()
	file := filepath.Join(dir, "audit.jsonl")
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	step := 24 * time.Hour / time.Duration(n)
	t := end.Add(-24 * time.Hour)
	w, err := audit.Open(audit.Config{File: file, Fsync: time.Hour, RotateSize: rotate, QueueSize: 1 << 14,
		Now: func() time.Time { t = t.Add(step); return t }})
	if err != nil {
		tb.Fatal(err)
	}
	type cl struct {
		c      *audit.Client
		ae     string
		remote string
	}
	var clients []cl
	for i := 0; i < 40; i++ {
		clients = append(clients, cl{
			c: &audit.Client{CN: fmt.Sprintf("mod%02d.clinic-%c.example.org", i, 'a'+i%5), Subject: fmt.Sprintf("CN=mod%02d", i),
				Fingerprint: fmt.Sprintf("sha256:%064x", i+1), Issuer: "CN=Clinic CA", NotAfter: end.Add(time.Duration(i*5) * 24 * time.Hour)},
			ae: fmt.Sprintf("CLIN%c_MOD%02d", 'A'+i%5, i), remote: fmt.Sprintf("203.0.113.%d:%d", i+1, 40000+i),
		})
	}
	written, assoc := 0, 0
	for written < n {
		c := clients[rng.IntN(len(clients))]
		id := fmt.Sprintf("gen-%d", assoc)
		assoc++
		switch r := rng.IntN(20); {
		case r == 0:
			w.Log(audit.Event{Event: audit.EventTLSFailed, Conn: id, Remote: c.remote, Listener: "edge", Reason: "unknown-ca"})
			written++
			continue
		case r == 1:
			w.Log(audit.Event{Event: audit.EventConnectionRefused, Conn: id, Remote: c.remote, Listener: "inside", Reason: "source-not-allowed"})
			written++
			continue
		case r <= 4:
			w.Log(audit.Event{Event: audit.EventRejected, Conn: id, Assoc: id, Remote: c.remote, Client: c.c, CallingAE: c.ae,
				CalledAE: "MAINPACS", Listener: "edge", Rule: "deny", Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"})
			written++
			continue
		}
		w.Log(audit.Event{Event: audit.EventAccepted, Conn: id, Assoc: id, Remote: c.remote, Client: c.c, CallingAE: c.ae,
			CalledAE: "MAINPACS", Listener: "edge", Rule: fmt.Sprintf("clinic-%c", c.ae[4]+32), Action: "relay", Backend: "pacs"})
		written++
		for k := rng.IntN(4); k > 0 && written < n; k-- {
			e := audit.Event{Event: audit.EventDIMSE, Conn: id, Assoc: id, Service: "C-STORE", SOPClass: "1.2.840.10008.5.1.4.1.1.2",
				SOPInstance: fmt.Sprintf("1.2.826.0.1.3680043.2.1125.%d.%d", assoc, k), StudyUID: fmt.Sprintf("1.2.3.%d", assoc/10),
				MessageID: k, Status: "0x0000", Bytes: 524288, MS: 3, Allowed: audit.Bool(true)}
			if assoc%7 == 0 {
				e.Deidentified = &audit.Deidentified{Profile: "basic", StudyUID: fmt.Sprintf("2.25.%d", assoc/10),
					SeriesUID: fmt.Sprintf("2.25.9%d", assoc), SOPInstance: fmt.Sprintf("2.25.8%d%d", assoc, k)}
			}
			w.Log(e)
			written++
		}
		if written < n {
			w.Log(audit.Event{Event: audit.EventReleased, Conn: id, Assoc: id, Rule: "clinic", Backend: "pacs", BytesIn: 1 << 20, BytesOut: 900, MS: 40})
			written++
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return file
}

// indexOf indexes file to its end.
func indexOf(tb testing.TB, file string, now time.Time) *Index {
	tb.Helper()
	x := NewIndex(file, func() time.Time { return now })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Minute); !x.CaughtUp(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("index did not catch up")
		}
	}
	tb.Cleanup(func() { cancel(); <-done })
	return x
}

// TestQueryIsTheCLIsSelection: for many filters, the index selects exactly
// the records `dicomedge audit` (audit.ReadFiles with the same Filter)
// selects, in the same order (newest first), across rotated files, and
// reads back their very lines.
func TestQueryIsTheCLIsSelection(t *testing.T) {
	end := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	file := genLog(t, t.TempDir(), 3000, end, 200<<10)
	if len(audit.Files(file)) < 3 {
		t.Fatalf("want a rotated log: %v", audit.Files(file))
	}
	x := indexOf(t, file, end)
	filters := []Filter{
		{},
		{CallingAE: "CLINA_MOD05"},
		{CallingAE: "clinb_*"},
		{CalledAE: "MAIN?ACS", Event: "dimse"},
		{Client: "mod07.clinic-c.example.org"},
		{Client: "203.0.113.9"},
		{Client: "sha256:*0c"},
		{Event: "association.*", Decision: "reject"},
		{Decision: "relay"},
		{Decision: "rejected", Listener: "inside"},
		{Since: end.Add(-3 * time.Hour), Until: end.Add(-time.Hour)},
		{Since: end.Add(-12 * time.Hour), CallingAE: "CLINE_*", Event: "association.released"},
		{CallingAE: "NOBODY"},
		{UID: "1.2.3.5"},
		{UID: "2.25.14"},
		{UID: "2.25.9140"},
		{UID: "1.2.826.0.1.3680043.2.1125.77.1", Event: "dimse"},
	}
	for _, f := range filters {
		var want []uint64
		var wantLines []string
		err := audit.ReadFiles(audit.Files(file), f, func(e audit.Event, line []byte) error {
			want = append(want, e.Seq)
			wantLines = append(wantLines, string(line))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(want)
		slices.Reverse(wantLines)
		total, hits, err := x.Query(f, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for i, h := range hits {
			got = append(got, h.Seq)
			if i < len(wantLines) && string(h.Line) != wantLines[i] {
				t.Errorf("%+v: hit %d reads %q, want %q", f, i, h.Line, wantLines[i])
				break
			}
		}
		if total != len(want) || !slices.Equal(got, want) {
			t.Errorf("filter %+v: index has %d records, the CLI %d", f, total, len(want))
		}
	}
	// Paging: the second page continues the first.
	_, p1, _ := x.Query(Filter{}, 0, 50)
	_, p2, _ := x.Query(Filter{}, 50, 50)
	if len(p1) != 50 || len(p2) != 50 || p1[49].Seq != p2[0].Seq+1 {
		t.Errorf("pages do not join: %d, %d", len(p1), len(p2))
	}
	// A UID selects the C-STOREs of that instance or study.
	var uid string
	_ = audit.ReadFiles(audit.Files(file), audit.Filter{Event: "dimse"}, func(e audit.Event, _ []byte) error {
		if uid == "" {
			uid = e.StudyUID
		}
		return nil
	})
	total, hits, _ := x.Query(Filter{UID: uid}, 0, 100)
	if total == 0 {
		t.Fatalf("uid %s: nothing", uid)
	}
	for _, h := range hits {
		var e audit.Event
		_ = e.UnmarshalJSON(h.Line)
		if e.StudyUID != uid && e.SOPInstance != uid {
			t.Errorf("uid %s selected %s", uid, h.Line)
		}
	}
}

// TestAggregates: the clients page's order (expiring first) and counts, and
// the rules' hits agree with the log.
func TestAggregates(t *testing.T) {
	end := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	file := genLog(t, t.TempDir(), 2000, end, 0)
	x := indexOf(t, file, end)
	cs := x.Clients(end, 30*24*time.Hour)
	if len(cs) == 0 {
		t.Fatal("no clients")
	}
	// Clients 0..5 expire within 30 days (i*5 days); they come first, soonest first.
	seenLater := false
	var last time.Time
	for _, c := range cs {
		exp := !c.Client.NotAfter.IsZero() && c.Client.NotAfter.Before(end.Add(30*24*time.Hour))
		if exp && seenLater {
			t.Fatalf("an expiring client after one that is not: %+v", c)
		}
		if exp {
			if c.Client.NotAfter.Before(last) {
				t.Fatal("expiring clients not soonest first")
			}
			last = c.Client.NotAfter
		} else {
			seenLater = true
		}
	}
	accepted := map[string]int{}
	_ = audit.ReadFiles([]string{file}, audit.Filter{Event: audit.EventAccepted}, func(e audit.Event, _ []byte) error {
		accepted[e.Client.Fingerprint]++
		return nil
	})
	for _, c := range cs {
		if c.Client.Fingerprint != "" && c.Accepted != accepted[c.Client.Fingerprint] {
			t.Errorf("%s: %d accepted, the log has %d", c.Client.CN, c.Accepted, accepted[c.Client.Fingerprint])
		}
	}
	assoc, refused := x.Series(end)
	sa, sr := 0, 0
	for i := range assoc {
		sa += assoc[i]
		sr += refused[i]
	}
	// The series is the 1,440 minutes up to and including now's.
	since := time.Unix((end.Unix()/60-24*60+1)*60, 0)
	na, _ := countEvents(file, audit.Filter{Event: audit.EventAccepted, Since: since})
	nr, _ := countEvents(file, audit.Filter{Decision: "reject", Since: since})
	if sa != na || sr != nr {
		t.Errorf("24 h series: %d accepted %d refused; the log: %d and %d", sa, sr, na, nr)
	}
}

func countEvents(file string, f audit.Filter) (int, error) {
	n := 0
	err := audit.ReadFiles(audit.Files(file), f, func(audit.Event, []byte) error { n++; return nil })
	return n, err
}

// The UID filter matches by a hash of the UID: a fixed hash would let a
// client choose a UID that collides with another record's and have its own
// records listed in a reviewer's search for that UID. Each index seeds its
// own.
func TestUIDHashIsSeededPerIndex(t *testing.T) {
	const uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
	a, b := NewIndex("", nil), NewIndex("", nil)
	if a.uidHash(uid) != a.uidHash(uid) {
		t.Fatal("one index hashes the same UID two ways")
	}
	if a.uidHash(uid) == b.uidHash(uid) {
		t.Fatal("two indexes hash a UID alike: a UID colliding with it can be found once for every edge")
	}
}
