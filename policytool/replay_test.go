package policytool

import (
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// TestReplayOldOutcome decides single association records of v1.hcl's
// traffic again under v1 itself: whatever the record's form (a rule's
// reject, a refusal after the rule accepted, with or without the action the
// edge now records, a log written before it did), nothing changes, and a
// record whose rule does not match v1's decision does.
func TestReplayOldOutcome(t *testing.T) {
	cfg := loadPolicy(t, "testdata/v1.hcl")
	ct := &audit.Client{CN: "ct1.clinic-a.example.org"}
	base := audit.Event{Time: time.Unix(0, 0), Assoc: "a", Remote: "203.0.113.7:1", Client: ct, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS"}
	with := func(f func(e *audit.Event)) audit.Event {
		e := base
		f(&e)
		return e
	}
	cases := []struct {
		name    string
		e       audit.Event
		changed bool
	}{
		{"accepted as v1 decides", with(func(e *audit.Event) {
			e.Event, e.Rule, e.Action, e.Backend = audit.EventAccepted, "clinic-a", "relay", "pacs"
		}), false},
		{"accepted by another rule", with(func(e *audit.Event) {
			e.Event, e.Rule, e.Action, e.Backend = audit.EventAccepted, "research", "relay", "pacs"
		}), true},
		{"accepted to another backend", with(func(e *audit.Event) {
			e.Event, e.Rule, e.Action, e.Backend = audit.EventAccepted, "clinic-a", "relay", "archive"
		}), true},
		{"refused after the rule relayed", with(func(e *audit.Event) {
			e.Event, e.Rule, e.Action, e.Backend = audit.EventRejected, "clinic-a", "relay", "pacs"
			e.Result, e.Source, e.ReasonCode, e.Reason = 2, 3, 2, "local-limit-exceeded"
		}), false},
		{"older log: refused by the backend, no action recorded", with(func(e *audit.Event) {
			e.Event, e.Rule = audit.EventRejected, "clinic-a"
			e.Result, e.Source, e.ReasonCode, e.Reason = 2, 3, 1, "backend-unreachable"
		}), false},
		{"older log: no action, the rule's codes", with(func(e *audit.Event) {
			e.Event, e.Rule = audit.EventRejected, "clinic-a"
			e.Result, e.Source, e.ReasonCode, e.Reason = 1, 1, 3, "calling-ae-not-recognized"
		}), true},
		{"rejected by a rule v1 does not reach", with(func(e *audit.Event) {
			e.Event, e.Rule = audit.EventRejected, "deny"
			e.Result, e.Source, e.ReasonCode, e.Reason = 1, 1, 3, "calling-ae-not-recognized"
		}), true},
		{"no rule matched, v1's deny does", with(func(e *audit.Event) {
			e.Remote = "198.51.100.1:1"
			e.Event, e.Rule = audit.EventRejected, ""
			e.Result, e.Source, e.ReasonCode, e.Reason = 1, 1, 3, "calling-ae-not-recognized"
		}), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var lines []string
			r := &Replayer{Config: cfg, Report: func(c *Change) error { lines = append(lines, c.String()); return nil }}
			if err := r.Record(&tc.e); err != nil {
				t.Fatal(err)
			}
			st := r.Stats()
			if st.Associations != 1 || (st.AssociationsChanged == 1) != tc.changed || len(lines) != st.AssociationsChanged {
				t.Errorf("stats %+v, lines %q; want changed=%v", st, lines, tc.changed)
			}
		})
	}
}

// Requests are judged as the relay judges them, each against the
// association's new rule; the backend's sub-operations and requests
// refused for protocol reasons keep their outcome.
func TestReplayRequests(t *testing.T) {
	cfg := loadPolicy(t, "testdata/v1.hcl")
	ct := &audit.Client{CN: "ct1.clinic-a.example.org"}
	acc := audit.Event{Event: audit.EventAccepted, Assoc: "a", Remote: "203.0.113.7:1", Client: ct, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS",
		Rule: "clinic-a", Action: "relay", Backend: "pacs"}
	req := func(service, sop, dest, status string, allowed bool, detail string) audit.Event {
		return audit.Event{Event: audit.EventDIMSE, Assoc: "a", Client: ct, Remote: acc.Remote, CallingAE: acc.CallingAE, CalledAE: acc.CalledAE,
			Service: service, SOPClass: sop, MoveDestination: dest, Status: status, Allowed: audit.Bool(allowed), Detail: detail}
	}
	events := []audit.Event{
		acc,
		req("C-STORE", "1.2.840.10008.5.1.4.1.1.2", "", "0x0000", true, ""),                                 // allowed, still
		req("C-GET", "1.2.840.10008.5.1.4.1.2.2.3", "", "0x0124", false, ""),                                // refused, still
		req("C-GET", "1.2.840.10008.5.1.4.1.2.2.3", "", "0x0000", true, ""),                                 // v1 refuses it now
		req("C-MOVE", "1.2.840.10008.5.1.4.1.2.2.2", "EVIL", "0x0000", true, ""),                            // v1 refuses the destination
		req("C-MOVE", "1.2.840.10008.5.1.4.1.2.2.2", "CLINA_WS1", "0x0124", false, ""),                      // v1 allows it
		req("C-STORE", "1.2.840.10008.5.1.4.1.1.2", "", "0x0122", false, ""),                                // a protocol refusal: the rule allowed it
		req("C-STORE", "1.2.840.10008.5.1.4.1.1.2", "", "0x0000", true, "C-GET sub-operation of message 3"), // the backend's: not judged
		{Event: audit.EventReleased, Assoc: "a"},
		req("C-GET", "1.2.840.10008.5.1.4.1.2.2.3", "", "0x0000", true, ""), // after the end: no association to judge it by
	}
	var lines []string
	r := &Replayer{Config: cfg, Report: func(c *Change) error { lines = append(lines, c.String()); return nil }}
	for i := range events {
		if err := r.Record(&events[i]); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`C-GET 1.2.840.10008.5.1.4.1.2.2.3: allowed → refused (service not allowed by rule "clinic-a")`,
		`C-MOVE to "EVIL" 1.2.840.10008.5.1.4.1.2.2.2: allowed → refused (move destination "EVIL" not allowed by rule "clinic-a")`,
		`C-MOVE to "CLINA_WS1" 1.2.840.10008.5.1.4.1.2.2.2: refused → allowed (allowed by rule "clinic-a")`,
	}
	if len(lines) != len(want) {
		t.Fatalf("reported %d changes, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i := range want {
		if !strings.HasSuffix(lines[i], want[i]) {
			t.Errorf("change %d:\n got %s\nwant …%s", i, lines[i], want[i])
		}
	}
	if st := r.Stats(); st.Associations != 1 || st.AssociationsChanged != 1 || st.Requests != 6 || st.RequestsChanged != 3 {
		t.Errorf("stats %+v", st)
	}
}
