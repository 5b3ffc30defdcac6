package audit

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Event names, exactly as docs/audit.md spells them.
const (
	EventTLSFailed          = "tls.failed"
	EventAccepted           = "association.accepted"
	EventRejected           = "association.rejected"
	EventDIMSE              = "dimse"
	EventReleased           = "association.released"
	EventAborted            = "association.aborted"
	EventPolicyReloaded     = "policy.reloaded"
	EventPolicyReloadFailed = "policy.reload_failed"
	EventCertRenewed        = "cert.renewed"
	EventConnectionRefused  = "connection.refused"
	EventAnchorMismatch     = "audit.anchor_mismatch"

	// The web console (console/): a sign-in, a refused one, and what a
	// signed-in person did (detail), with user or the admin certificate's
	// client, and remote.
	EventConsoleLogin       = "console.login"
	EventConsoleLoginFailed = "console.login_failed"
	EventConsoleAction      = "console.action"
	EventTLSExpiring        = "tls.expiring"
)

// ZeroHash is the prev of the very first record of a chain.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimeFormat is RFC 3339 in UTC with a fixed nine-digit fraction, so records
// sort and align as text.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Client is the verified TLS identity of the peer, copied from the
// certificate (audit stays a leaf: the proxy converts tlslayer.Identity).
// On a tls.failed or tls.expiring record it is the certificate the client
// presented; on tls.failed that certificate did not verify.
type Client struct {
	Subject     string    `json:"subject,omitempty"`
	CN          string    `json:"cn,omitempty"`
	DNS         []string  `json:"dns,omitempty"`
	URI         []string  `json:"uri,omitempty"`
	Email       []string  `json:"email,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"` // "sha256:<hex>"
	Issuer      string    `json:"issuer,omitempty"`
	Serial      string    `json:"serial,omitempty"`    // hexadecimal
	NotBefore   time.Time `json:"not_before,omitzero"` // RFC 3339, UTC
	NotAfter    time.Time `json:"not_after,omitzero"`
}

// UserIdentity is the A-ASSOCIATE-RQ user identity sub-item: its type and
// user name only, never the password, Kerberos ticket, SAML assertion or JWT.
type UserIdentity struct {
	Type string `json:"type,omitempty"`
	User string `json:"user,omitempty"`
}

// Event is one audit record. Zero-valued fields are omitted from the line.
// Time, Seq and Prev are set by the Writer.
type Event struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	Seq   uint64    `json:"seq"`
	Prev  string    `json:"prev"`

	Conn      string  `json:"conn,omitempty"`
	Assoc     string  `json:"assoc,omitempty"`
	Remote    string  `json:"remote,omitempty"` // ip:port (the PROXY header's source when trusted)
	Client    *Client `json:"client,omitempty"`
	CallingAE string  `json:"calling_ae,omitempty"`
	CalledAE  string  `json:"called_ae,omitempty"`
	Listener  string  `json:"listener,omitempty"` // the name of the listener the connection arrived on
	User      string  `json:"user,omitempty"`     // console.*: the console user (a password login)

	// Reason is the failure class for tls.failed and connection.refused and
	// the reject reason name (e.g. "calling-ae-not-recognized") for
	// association.rejected.
	Reason string `json:"reason,omitempty"`

	// association.accepted / association.rejected
	Rule         string        `json:"rule,omitempty"`
	Action       string        `json:"action,omitempty"` // "answer" | "relay"
	Backend      string        `json:"backend,omitempty"`
	Contexts     []string      `json:"contexts,omitempty"`
	UserIdentity *UserIdentity `json:"user_identity,omitempty"`
	Result       int           `json:"result,omitempty"`      // PS3.8 A-ASSOCIATE-RJ result (1 permanent, 2 transient)
	Source       int           `json:"source,omitempty"`      // PS3.8 A-ASSOCIATE-RJ source (1, 2, 3)
	ReasonCode   int           `json:"reason_code,omitempty"` // PS3.8 A-ASSOCIATE-RJ reason/diag.
	ResultName   string        `json:"result_name,omitempty"`
	SourceName   string        `json:"source_name,omitempty"`

	// dimse
	Service         string `json:"service,omitempty"` // "C-STORE", ...
	SOPClass        string `json:"sop_class,omitempty"`
	SOPInstance     string `json:"sop_instance,omitempty"`
	StudyUID        string `json:"study_uid,omitempty"` // C-STORE: the data set's Study Instance UID (0020,000D)
	MessageID       int    `json:"message_id,omitempty"`
	Status          string `json:"status,omitempty"` // "0x0000"
	MoveDestination string `json:"move_destination,omitempty"`
	PatientID       string `json:"patient_id,omitempty"` // already formatted by Writer.PatientID
	Bytes           int64  `json:"bytes,omitempty"`
	MS              int64  `json:"ms,omitempty"`
	Allowed         *bool  `json:"allowed,omitempty"`
	// Deidentified: on a de-identifying rule, what the instance became.
	Deidentified *Deidentified `json:"deidentified,omitempty"`

	// association.released / association.aborted
	BytesIn     int64  `json:"bytes_in,omitempty"`
	BytesOut    int64  `json:"bytes_out,omitempty"`
	AbortSource string `json:"abort_source,omitempty"`
	AbortReason string `json:"abort_reason,omitempty"`

	// policy.reloaded / policy.reload_failed / cert.renewed
	Detail string `json:"detail,omitempty"`
}

// Deidentified is what a de-identified instance became (docs/deidentify.md):
// with the record's sop_instance, study_uid and patient_id (the originals),
// the way back from what a recipient reports to the hospital's study.
type Deidentified struct {
	Profile          string `json:"profile,omitempty"`
	StudyUID         string `json:"study_uid,omitempty"`
	SeriesUID        string `json:"series_uid,omitempty"`
	SOPInstance      string `json:"sop_instance,omitempty"`
	PatientPseudonym string `json:"patient_pseudonym,omitempty"`
	OriginalSeries   string `json:"original_series_uid,omitempty"`
}

// Bool returns a pointer to b, for Event.Allowed.
func Bool(b bool) *bool { return &b }

// MarshalJSON encodes the record exactly as the Writer writes it.
func (e Event) MarshalJSON() ([]byte, error) { return e.appendJSON(nil), nil }

// UnmarshalJSON is the default decoding; it exists only so that the
// MarshalJSON method above does not hide the struct tags' meaning.
func (e *Event) UnmarshalJSON(b []byte) error {
	return json.Unmarshal(b, (*plainEvent)(e))
}

// plainEvent is Event without its methods: decoding into it skips the
// UnmarshalJSON indirection, which would validate every line twice.
type plainEvent Event

// appendJSON writes the record by hand: the writer goroutine encodes every
// event, and reflection-based encoding/json costs several allocations each.
// The field order is fixed (time, event, seq, prev first) so lines read well.
func (e *Event) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, TimeFormat)
	b = append(b, `","event":`...)
	b = appendString(b, e.Event)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"prev":`...)
	b = appendString(b, e.Prev)
	b = optString(b, "conn", e.Conn)
	b = optString(b, "assoc", e.Assoc)
	b = optString(b, "remote", e.Remote)
	if c := e.Client; c != nil {
		b = append(b, `,"client":{`...)
		n := len(b)
		b = optString(b, "subject", c.Subject)
		b = optString(b, "cn", c.CN)
		b = optStrings(b, "dns", c.DNS)
		b = optStrings(b, "uri", c.URI)
		b = optStrings(b, "email", c.Email)
		b = optString(b, "fingerprint", c.Fingerprint)
		b = optString(b, "issuer", c.Issuer)
		b = optString(b, "serial", c.Serial)
		b = optTime(b, "not_before", c.NotBefore)
		b = optTime(b, "not_after", c.NotAfter)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...) // drop the leading comma of the first member
		}
		b = append(b, '}')
	}
	b = optString(b, "calling_ae", e.CallingAE)
	b = optString(b, "called_ae", e.CalledAE)
	b = optString(b, "listener", e.Listener)
	b = optString(b, "user", e.User)
	b = optString(b, "reason", e.Reason)
	// Measured values and the rejecting rule are written even when zero or
	// empty, so that every record of an event type carries the fields
	// docs/audit.md lists for it: a 0 ms C-ECHO has "ms":0, and a reject no
	// rule matched has "rule":"" (not a missing key).
	dimseEv := e.Event == EventDIMSE
	ended := e.Event == EventReleased || e.Event == EventAborted
	if e.Event == EventRejected {
		b = append(b, `,"rule":`...)
		b = appendString(b, e.Rule)
	} else {
		b = optString(b, "rule", e.Rule)
	}
	b = optString(b, "action", e.Action)
	b = optString(b, "backend", e.Backend)
	b = optStrings(b, "contexts", e.Contexts)
	if u := e.UserIdentity; u != nil {
		b = append(b, `,"user_identity":{`...)
		n := len(b)
		b = optString(b, "type", u.Type)
		b = optString(b, "user", u.User)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...)
		}
		b = append(b, '}')
	}
	b = optInt(b, "result", int64(e.Result))
	b = optInt(b, "source", int64(e.Source))
	b = optInt(b, "reason_code", int64(e.ReasonCode))
	b = optString(b, "result_name", e.ResultName)
	b = optString(b, "source_name", e.SourceName)
	b = optString(b, "service", e.Service)
	b = optString(b, "sop_class", e.SOPClass)
	b = optString(b, "sop_instance", e.SOPInstance)
	b = optString(b, "study_uid", e.StudyUID)
	b = optInt(b, "message_id", int64(e.MessageID))
	b = optString(b, "status", e.Status)
	b = optString(b, "move_destination", e.MoveDestination)
	b = optString(b, "patient_id", e.PatientID)
	b = intIf(b, "bytes", e.Bytes, dimseEv)
	b = intIf(b, "ms", e.MS, dimseEv || ended)
	if e.Allowed != nil {
		b = append(b, `,"allowed":`...)
		b = strconv.AppendBool(b, *e.Allowed)
	}
	if d := e.Deidentified; d != nil {
		b = append(b, `,"deidentified":{`...)
		n := len(b)
		b = optString(b, "profile", d.Profile)
		b = optString(b, "study_uid", d.StudyUID)
		b = optString(b, "series_uid", d.SeriesUID)
		b = optString(b, "sop_instance", d.SOPInstance)
		b = optString(b, "patient_pseudonym", d.PatientPseudonym)
		b = optString(b, "original_series_uid", d.OriginalSeries)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...)
		}
		b = append(b, '}')
	}
	b = intIf(b, "bytes_in", e.BytesIn, ended)
	b = intIf(b, "bytes_out", e.BytesOut, ended)
	b = optString(b, "abort_source", e.AbortSource)
	b = optString(b, "abort_reason", e.AbortReason)
	b = optString(b, "detail", e.Detail)
	return append(b, '}')
}

func optString(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func optTime(b []byte, key string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano) // certificate times are whole seconds: "2026-12-21T13:00:00Z"
	return append(b, '"')
}

func optStrings(b []byte, key string, v []string) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":[`...)
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// intIf writes key when always is set, and otherwise only when v is not 0.
func intIf(b []byte, key string, v int64, always bool) []byte {
	if always && v == 0 {
		b = append(b, ',', '"')
		b = append(b, key...)
		return append(b, '"', ':', '0')
	}
	return optInt(b, key, v)
}

func optInt(b []byte, key string, v int64) []byte {
	if v == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 (AE titles and
// certificate fields come from the network) becomes U+FFFD, as encoding/json
// does, so every line stays valid JSON and one line per record: control
// characters (C0, DEL, C1), including newlines, and bidirectional formatting
// characters are always escaped as \uXXXX.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		// C1 controls, bidirectional formatting characters, U+2028/U+2029:
		// escaped in the line itself, so the hash chain covers the escaped
		// form and no reader ever gets them raw (escape.go).
		if unsafeRune(r) {
			b = append(b, s[start:i]...)
			b = appendU(b, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Store-and-forward events (docs/audit.md): one spool.stored per instance
// made durable, spool.forwarded per delivery, spool.failed on a permanent
// refusal (moved to failed/), spool.expired past max_age, spool.purged by
// `dicomedge spool purge`.
const (
	EventSpoolStored    = "spool.stored"
	EventSpoolForwarded = "spool.forwarded"
	EventSpoolFailed    = "spool.failed"
	EventSpoolExpired   = "spool.expired"
	EventSpoolPurged    = "spool.purged"
)
