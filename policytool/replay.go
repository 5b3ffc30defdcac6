package policytool

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// ChangeKind says what a Change reports.
type ChangeKind uint8

const (
	// AssociationChanged: the policy decides the association differently
	// (another action, backend or reject reason, or another rule).
	AssociationChanged ChangeKind = iota
	// RequestChanged: a DIMSE request the edge forwarded would now be
	// refused, or one it refused would now be allowed.
	RequestChanged
	// NotReplayed: the record cannot be decided again without guessing (its
	// listener is not in the policy, or the log lacks a field the decision
	// needs).
	NotReplayed
)

// Outcome is a decision as the audit log and Evaluate both can state it.
type Outcome struct {
	Decision string // "answer", "relay <backend>" or "reject <reason>"
	Rule     string // "" when no rule matched
	// After is set when the rule accepted (answer or relay) but the edge
	// refused the association afterwards (a limit, the backend, the
	// negotiation): the reason recorded for that refusal.
	After string
}

func (o Outcome) String() string {
	s := o.Decision
	if o.Rule == "" {
		s += " (no rule matched)"
	} else {
		s += " by rule " + strconv.Quote(o.Rule)
	}
	if o.After != "" {
		s += ", then refused: " + o.After
	}
	return s
}

// Change is one association or request whose outcome differs under the new
// policy, or a record that could not be replayed.
type Change struct {
	Kind      ChangeKind
	Time      time.Time
	Assoc     string
	Client    string // who, as shown: the certificate's CN (or subject, or fingerprint) and the source address
	CallingAE string
	CalledAE  string
	Listener  string

	Old, New Outcome // AssociationChanged; for RequestChanged, the association's rules

	// RequestChanged
	Service         string
	SOPClass        string
	MoveDestination string
	OldAllowed      bool
	NewAllowed      bool
	Why             string // why the new policy refuses or allows it; NotReplayed: why it is not replayed
}

// String is the line `dicomedge policy replay` prints for c. Every field
// taken from the log is shown through Printable, so that a crafted AE title
// or certificate name cannot pass for another record.
func (c *Change) String() string {
	var b strings.Builder
	b.WriteString(c.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteString("  ")
	b.WriteString(c.Client)
	b.WriteString("  ")
	b.WriteString(Printable(c.CallingAE))
	b.WriteString("→")
	b.WriteString(Printable(c.CalledAE))
	if c.Listener != EdgeListener {
		b.WriteString(" on ")
		b.WriteString(Printable(c.Listener))
	}
	b.WriteString("  ")
	switch c.Kind {
	case AssociationChanged:
		fmt.Fprintf(&b, "%s → %s", c.Old, c.New)
	case RequestChanged:
		b.WriteString(Printable(c.Service))
		if c.MoveDestination != "" {
			fmt.Fprintf(&b, " to %s", strconv.Quote(c.MoveDestination))
		}
		if c.SOPClass != "" {
			b.WriteString(" ")
			b.WriteString(Printable(c.SOPClass))
		}
		fmt.Fprintf(&b, ": %s → %s (%s)", allowedWord(c.OldAllowed), allowedWord(c.NewAllowed), c.Why)
	case NotReplayed:
		b.WriteString("not replayed: ")
		b.WriteString(c.Why)
	}
	return b.String()
}

func allowedWord(ok bool) string {
	if ok {
		return "allowed"
	}
	return "refused"
}

// ReplayStats counts what Replay read and found.
type ReplayStats struct {
	Records             int // audit records read
	Associations        int // associations decided again
	AssociationsChanged int // of those, whose decision or any request would change
	Requests            int // DIMSE requests of those associations decided again
	RequestsChanged     int
	NotReplayed         int // association records that could not be decided again
}

// Summary is the line that ends `dicomedge policy replay`.
func (s ReplayStats) Summary() string {
	return fmt.Sprintf("%d associations replayed, %d would change", s.Associations, s.AssociationsChanged)
}

// Replayer re-decides the records of an audit log under cfg. Associations
// whose accepted or rejected record falls in [Since, Until) are replayed,
// each with all its DIMSE requests (zero times are open ends).
type Replayer struct {
	Config       *policy.Config
	Since, Until time.Time
	// Report receives each change in log order; its error stops the replay.
	Report func(*Change) error

	stats ReplayStats
	open  map[string]*replayAssoc
}

// replayAssoc is what Replay keeps of an association between its decision
// record and its end.
type replayAssoc struct {
	oldAction string // "answer" | "relay" as the log says
	oldRule   string
	newRule   string
	newDec    policy.Decision
	changed   bool // counted in AssociationsChanged
}

// maxOpen bounds the associations kept between their decision record and
// their end, against a log with many associations that never ended (a
// crash): past it the oldest are forgotten and their later requests not
// replayed.
const maxOpen = 1 << 18

// ReplayFiles replays the audit files in order (audit.Files gives a log's
// rotated files, oldest first, then the file itself).
func (r *Replayer) ReplayFiles(paths []string) (ReplayStats, error) {
	r.stats = ReplayStats{}
	r.open = make(map[string]*replayAssoc)
	err := audit.ReadFiles(paths, audit.Filter{}, func(e audit.Event, _ []byte) error {
		return r.Record(&e)
	})
	var bad *audit.BadLinesError
	if errors.As(err, &bad) {
		// Every good record was replayed; the caller reports the rest.
		return r.stats, err
	}
	return r.stats, err
}

// Stats returns the counts so far.
func (r *Replayer) Stats() ReplayStats { return r.stats }

// Record replays one audit record (records must come in log order, with
// the association context audit.ReadFiles fills in).
func (r *Replayer) Record(e *audit.Event) error {
	if r.open == nil {
		r.open = make(map[string]*replayAssoc)
	}
	r.stats.Records++
	switch e.Event {
	case audit.EventAccepted, audit.EventRejected:
		return r.association(e)
	case audit.EventDIMSE:
		if a := r.open[e.Assoc]; a != nil {
			return r.request(a, e)
		}
	case audit.EventReleased, audit.EventAborted:
		delete(r.open, e.Assoc)
	}
	return nil
}

func (r *Replayer) inWindow(t time.Time) bool {
	return (r.Since.IsZero() || !t.Before(r.Since)) && (r.Until.IsZero() || t.Before(r.Until))
}

// policyRejectSource is PS3.8 Table 9-21's source 1, service user: the
// source of every reject a rule makes.
const policyRejectSource = 1

// oldOutcome reads what the policy in force decided from an association
// record. A rejected record carries the rule's action when the rule
// accepted and a later step refused; records written before the edge
// recorded that are told apart by their codes: a rule's reject is always
// source 1 with one of reject.reason's names.
func oldOutcome(e *audit.Event) (o Outcome, action string) {
	o.Rule = e.Rule
	switch {
	case e.Event == audit.EventAccepted || e.Action != "":
		action = e.Action
		o.Decision = Printable(e.Action)
		if e.Action == "relay" && e.Backend != "" {
			o.Decision += " " + Printable(e.Backend)
		}
		if e.Event == audit.EventRejected {
			o.After = refusal(e)
		}
	case e.Rule == "" || (e.Source == policyRejectSource && slices.Contains(policy.RejectReasonNames(), e.Reason)):
		action = "reject"
		o.Decision = rejectText(e.Reason, e.Result)
	default:
		// The rule accepted, the log does not say how; only the rule is known.
		action = "accept"
		o.Decision = "accept"
		o.After = refusal(e)
	}
	return o, action
}

func refusal(e *audit.Event) string {
	if e.Reason != "" {
		return Printable(e.Reason)
	}
	return fmt.Sprintf("%d/%d/%d", e.Result, e.Source, e.ReasonCode)
}

func newOutcome(d *policy.Decision) Outcome {
	return Outcome{Decision: decisionText(d), Rule: d.Rule}
}

// rejectResultTransient is PS3.8 Table 9-21's result 2, rejected-transient
// (`transient = true` in a reject block).
const rejectResultTransient = 2

// rejectText is "reject <reason>", marked when the reject is transient:
// a client retries a transient reject, so the change matters.
func rejectText(reason string, result int) string {
	s := "reject " + Printable(reason)
	if result == rejectResultTransient {
		s += " (transient)"
	}
	return s
}

// decisionText is d as the log's records are shown.
func decisionText(d *policy.Decision) string {
	if d.Action == policy.ActionReject {
		return rejectText(d.Reject.ReasonName, int(d.Reject.Result))
	}
	return d.String()
}

// sameOutcome reports whether the new decision is what the log records:
// the same rule with the same action (and backend, or reject reason). For
// an association the edge refused after its rule accepted it, the same
// rule accepting it again is the same outcome.
func sameOutcome(old Outcome, oldAction string, d *policy.Decision) bool {
	if old.Rule != d.Rule {
		return false
	}
	if old.After != "" && d.Action != policy.ActionReject {
		return oldAction == "accept" || (oldAction == d.Action.String() && old.Decision == decisionText(d))
	}
	return old.Decision == decisionText(d)
}

func (r *Replayer) association(e *audit.Event) error {
	delete(r.open, e.Assoc)
	if !r.inWindow(e.Time) {
		return nil
	}
	listener := e.Listener
	if listener == "" {
		listener = EdgeListener
	}
	c := &Change{Time: e.Time, Assoc: e.Assoc, Client: who(e), CallingAE: e.CallingAE, CalledAE: e.CalledAE, Listener: listener}
	in, why := input(r.Config, listener, e)
	if why != "" {
		r.stats.NotReplayed++
		c.Kind, c.Why = NotReplayed, why
		return r.report(c)
	}
	r.stats.Associations++
	d := Evaluate(r.Config, listener, &in)
	old, oldAction := oldOutcome(e)
	a := &replayAssoc{oldAction: oldAction, oldRule: e.Rule, newRule: d.Rule, newDec: d}
	if e.Event == audit.EventAccepted && e.Assoc != "" && d.Action != policy.ActionReject {
		if len(r.open) >= maxOpen {
			clear(r.open)
		}
		r.open[e.Assoc] = a
	}
	if sameOutcome(old, oldAction, &d) {
		return nil
	}
	a.changed = true
	r.stats.AssociationsChanged++
	c.Kind, c.Old, c.New = AssociationChanged, old, newOutcome(&d)
	return r.report(c)
}

func (r *Replayer) report(c *Change) error {
	if r.Report == nil {
		return nil
	}
	return r.Report(c)
}

// input rebuilds the policy input of an association record, or says why it
// cannot without guessing.
func input(cfg *policy.Config, listener string, e *audit.Event) (policy.Input, string) {
	var in policy.Input
	l := cfg.Listener(listener)
	if l == nil {
		return in, fmt.Sprintf("listener %s is not in the policy", strconv.Quote(listener))
	}
	// On a plain listener a client has no certificate: its source address
	// is its identity, and client_* conditions never match there.
	if c := e.Client; c != nil {
		in.CN, in.DNS, in.URI, in.Email, in.Fingerprint = c.CN, c.DNS, c.URI, c.Email, c.Fingerprint
	} else if !l.Plain() {
		return in, "the record holds no client identity"
	}
	host, _, err := net.SplitHostPort(e.Remote)
	if err != nil {
		return in, "the record holds no source address"
	}
	if in.SourceIP, err = netip.ParseAddr(host); err != nil {
		return in, fmt.Sprintf("the record's source address %s is not an IP address", strconv.Quote(e.Remote))
	}
	if e.CallingAE == "" || e.CalledAE == "" {
		return in, "the record holds no AE titles"
	}
	in.CallingAE, in.CalledAE = e.CallingAE, e.CalledAE
	return in, ""
}

// who names the client of a record for the report.
func who(e *audit.Event) string {
	name := ""
	if c := e.Client; c != nil {
		switch {
		case c.CN != "":
			name = c.CN
		case c.Subject != "":
			name = c.Subject
		default:
			name = c.Fingerprint
		}
	}
	host, _, err := net.SplitHostPort(e.Remote)
	if err != nil {
		host = e.Remote
	}
	switch {
	case name == "" && host == "":
		return "(unknown client)"
	case name == "":
		return Printable(host)
	case host == "":
		return Printable(name)
	}
	return Printable(name) + " " + Printable(host)
}

// statusRefusedNotAuthorized is the status the edge answers a request the
// rule does not allow with (PS3.7 C.5: 0124H, refused: not authorized).
const statusRefusedNotAuthorized = "0x0124"

// request replays a DIMSE record of an association that the new policy
// still accepts. The client's own requests are judged as the relay judges
// them (service, C-MOVE destination, SOP class); C-STORE requests the
// backend sent (C-GET sub-operations, PS3.4 C.4.3, recorded with a detail
// naming their C-GET) are not the client's and no rule judges them.
func (r *Replayer) request(a *replayAssoc, e *audit.Event) error {
	if e.Detail != "" && e.Service == "C-STORE" {
		return nil
	}
	r.stats.Requests++
	// What the old policy said: a request refused with any other status
	// was allowed by the rule and refused for a protocol reason; on an
	// answered association the edge refuses all but C-ECHO itself.
	oldAllowed := e.Allowed == nil || *e.Allowed ||
		(e.Status != statusRefusedNotAuthorized && a.oldAction != "answer")
	d := &a.newDec
	newAllowed, why := judge(d, e)
	if oldAllowed == newAllowed {
		return nil
	}
	r.stats.RequestsChanged++
	if !a.changed {
		a.changed = true
		r.stats.AssociationsChanged++
	}
	c := &Change{Kind: RequestChanged, Time: e.Time, Assoc: e.Assoc, Client: who(e), CallingAE: e.CallingAE,
		CalledAE: e.CalledAE, Listener: e.Listener, Service: e.Service, SOPClass: e.SOPClass,
		MoveDestination: e.MoveDestination, OldAllowed: oldAllowed, NewAllowed: newAllowed, Why: why,
		Old: Outcome{Rule: a.oldRule}, New: newOutcome(d)}
	if c.Listener == "" {
		c.Listener = EdgeListener
	}
	return r.report(c)
}

// judge decides a recorded request under d in the relay's order (service,
// then C-MOVE destination, then SOP class) and says why.
func judge(d *policy.Decision, e *audit.Event) (bool, string) {
	rule := strconv.Quote(d.Rule)
	switch {
	case !d.AllowsService(e.Service):
		return false, fmt.Sprintf("service not allowed by rule %s", rule)
	case e.Service == "C-MOVE" && !d.AllowsMoveDestination(e.MoveDestination):
		return false, fmt.Sprintf("move destination %s not allowed by rule %s", strconv.Quote(e.MoveDestination), rule)
	case e.SOPClass != "" && !d.AllowsSOPClass(e.SOPClass):
		return false, fmt.Sprintf("SOP class %s not allowed by rule %s", Printable(e.SOPClass), rule)
	}
	return true, "allowed by rule " + rule
}
