package audit

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// reasonExpired is tls.failed's reason for an expired certificate
// (tlslayer.ReasonExpired; audit stays a leaf).
const reasonExpired = "expired"

// TableHeader is the header of TableRow's columns.
var TableHeader = []string{"TIME", "CLIENT", "AE (CALLING→CALLED)", "EVENT", "DECISION/SERVICE", "STATUS", "BYTES"}

// TableRow is what `dicomedge audit` prints of a record, and the console
// shows: time, client, AE pair, event, decision or service, status, bytes,
// every cell escaped (Escape) and "-" when empty. e is the record with what
// it inherits from its association filled in (ReadFiles does).
func TableRow(e *Event) []string {
	row := []string{
		e.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
		Who(e),
		AEPair(e),
		e.Event,
		"", "", "",
	}
	switch e.Event {
	case EventTLSFailed, EventConnectionRefused:
		row[4], row[5] = "reject", e.Reason
		if c := e.Client; c != nil {
			// Which certificate: its fingerprint is the one name a client
			// cannot choose, and for expired its date is the story.
			row[5] = join(row[5], ShortFingerprint(c.Fingerprint))
			if e.Reason == reasonExpired && !c.NotAfter.IsZero() {
				row[5] = join(row[5], "not_after "+c.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	case EventTLSExpiring:
		row[4], row[5] = "warn", e.Detail
	case EventAccepted:
		row[4] = join(e.Action, e.Backend)
		if e.Rule != "" {
			row[5] = "rule " + e.Rule
		}
	case EventRejected:
		row[4] = "reject"
		row[5] = e.Reason
		if e.Result != 0 {
			row[5] = join(e.Reason, fmt.Sprintf("(%d/%d/%d)", e.Result, e.Source, e.ReasonCode))
		}
		if e.Rule != "" {
			row[5] = join(row[5], "rule "+e.Rule)
		}
	case EventDIMSE:
		row[4] = e.Service
		if e.Allowed != nil && !*e.Allowed {
			row[4] = join(e.Service, "refused")
		}
		row[5] = e.Status
		if e.Bytes != 0 {
			row[6] = HumanBytes(e.Bytes)
		}
	case EventReleased, EventAborted:
		row[5] = join(e.AbortSource, e.AbortReason)
		if e.BytesIn != 0 || e.BytesOut != 0 {
			row[6] = "in " + HumanBytes(e.BytesIn) + " out " + HumanBytes(e.BytesOut)
		}
	default:
		row[5] = e.Detail
	}
	for i, c := range row {
		if c == "" {
			c = "-"
		}
		row[i] = Escape(c)
	}
	return row
}

// who names the peer: its certificate identity, or, when it has none (a
// failed handshake), its address in brackets. The certificate of a failed
// handshake did not verify, so its name is marked as a claim with the
// address beside it: a stranger calling itself a known modality must not
// read as that modality.
// Who names a record's client: its certificate (marked unverified on
// tls.failed), the console user, or the source address in brackets.
func Who(e *Event) string {
	if n := ClientName(e.Client); n != "" {
		if e.Event == EventTLSFailed {
			return n + " (unverified) " + BracketHost(e.Remote)
		}
		return n
	}
	if e.User != "" {
		return e.User // a console.* record of a password sign-in
	}
	return BracketHost(e.Remote)
}

// BracketHost is the host of an ip:port in brackets, or "" for none.
func BracketHost(remote string) string {
	if remote == "" {
		return ""
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	return "[" + host + "]"
}

// ShortFingerprint keeps "sha256:" and 16 hex digits: enough to tell
// certificates apart in a table; --json has the whole.
func ShortFingerprint(fp string) string {
	if len(fp) > len("sha256:")+16 {
		return fp[:len("sha256:")+16] + "…"
	}
	return fp
}

// ClientName is the name a certificate is shown by: its CN, else the first
// DNS, URI or email SAN, the subject, or the fingerprint.
func ClientName(c *Client) string {
	switch {
	case c == nil:
		return ""
	case c.CN != "":
		return c.CN
	case len(c.DNS) > 0:
		return c.DNS[0]
	case len(c.URI) > 0:
		return c.URI[0]
	case len(c.Email) > 0:
		return c.Email[0]
	case c.Subject != "":
		return c.Subject
	}
	return c.Fingerprint
}

// AEPair is "CALLING→CALLED", spaces trimmed; "" when neither is known.
func AEPair(e *Event) string {
	calling, called := strings.TrimSpace(e.CallingAE), strings.TrimSpace(e.CalledAE)
	if calling == "" && called == "" {
		return ""
	}
	return calling + "→" + called
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + " " + b
}

// HumanBytes is n in B, KiB, MiB, ...
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n), 0
	for ; (v >= unit || v <= -unit) && i < 5; i++ {
		v /= unit
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + "KMGTPE"[i-1:i] + "iB"
}
