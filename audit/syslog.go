package audit

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// frame appends one RFC 5425 frame for record e (its line as written):
// MSG-LEN SP SYSLOG-MSG, where the message is RFC 5424:
// <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG.
func (f *Forwarder) frame(b []byte, e *Event, line []byte) []byte {
	// Facility 10 (security/authorization), as IHE ATNA uses; severity 4
	// (warning) for failures, 5 (notice) otherwise.
	sev := 5
	if outcome(e) != 0 {
		sev = 4
	}
	msgID := sdName(e.Event, 32)
	var msg []byte
	if f.cfg.Format == "atna" {
		msgID = "IHE+RFC-3881"
		msg = ATNA(e, f.cfg.Hostname)
	} else {
		msg = line
	}
	var m bytes.Buffer
	fmt.Fprintf(&m, "<%d>1 %s %s dicomedge %s %s - ", 10*8+sev,
		e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), // RFC 5424 allows at most 6 fraction digits
		orNil(sdName(f.cfg.Hostname, 255)), f.pid, orNil(msgID))
	m.Write(msg)
	b = strconv.AppendInt(b, int64(m.Len()), 10)
	b = append(b, ' ')
	return append(b, m.Bytes()...)
}

// sdName keeps the PRINTUSASCII characters RFC 5424 allows in header fields.
func sdName(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max]
	}
	return s
}

func orNil(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// outcome is the RFC 3881 EventOutcomeIndicator: 0 success, 4 minor
// failure (a refused request, a rejected or aborted association, a failed
// handshake or reload).
func outcome(e *Event) int {
	switch e.Event {
	case EventTLSFailed, EventConnectionRefused, EventRejected, EventAborted, EventPolicyReloadFailed, EventAnchorMismatch:
		return 4
	case EventDIMSE:
		if e.Allowed != nil && !*e.Allowed {
			return 4
		}
		// PS3.7 status: 0x0000 success, 0xFF00/0xFF01 pending, 0x0001 and
		// 0xBxxx warnings; everything else is a failure.
		st, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(e.Status), "0x"), 16, 16)
		if err == nil && !(st == 0 || st == 1 || st == 0xff00 || st == 0xff01 || st&0xf000 == 0xb000) {
			return 4
		}
	}
	return 0
}

// Coded values from DICOM PS3.16: CID 400 (Audit Event ID), CID 401-ish
// event type codes (Login/Logout, Node Authentication, Security
// Configuration), CID 402 (Audit Active Participant Role ID); RFC 3881
// participant object codes as PS3.15 A.5.1.2 uses them.
var (
	codeApplicationActivity = atnaCode{"110100", "DCM", "Application Activity"}
	codeInstancesTransfer   = atnaCode{"110104", "DCM", "DICOM Instances Transferred"}
	codeQuery               = atnaCode{"110112", "DCM", "Query"}
	codeSecurityAlert       = atnaCode{"110113", "DCM", "Security Alert"}
	codeUserAuthentication  = atnaCode{"110114", "DCM", "User Authentication"}
	codeLogin               = atnaCode{"110122", "DCM", "Login"}
	codeLogout              = atnaCode{"110123", "DCM", "Logout"}
	codeNodeAuthentication  = atnaCode{"110126", "DCM", "Node Authentication"}
	codeSecurityConfig      = atnaCode{"110129", "DCM", "Security Configuration"}
	codeApplication         = atnaCode{"110150", "DCM", "Application"}
	codeDestinationRole     = atnaCode{"110152", "DCM", "Destination Role ID"}
	codeSourceRole          = atnaCode{"110153", "DCM", "Source Role ID"}
	codeStudyInstanceUID    = atnaCode{"110180", "DCM", "Study Instance UID"}
	codeSOPClassUID         = atnaCode{"110181", "DCM", "SOP Class UID"}
	codePatientNumber       = atnaCode{"2", "RFC-3881", "Patient Number"}
)

type atnaCode struct {
	Code   string `xml:"csd-code,attr"`
	System string `xml:"codeSystemName,attr"`
	Text   string `xml:"originalText,attr,omitempty"`
}

type atnaMessage struct {
	XMLName      xml.Name          `xml:"AuditMessage"`
	Event        atnaEvent         `xml:"EventIdentification"`
	Participants []atnaParticipant `xml:"ActiveParticipant"`
	Source       atnaSource        `xml:"AuditSourceIdentification"`
	Objects      []atnaObject      `xml:"ParticipantObjectIdentification,omitempty"`
}

type atnaEvent struct {
	Action   string     `xml:"EventActionCode,attr"`
	DateTime string     `xml:"EventDateTime,attr"`
	Outcome  int        `xml:"EventOutcomeIndicator,attr"`
	ID       atnaCode   `xml:"EventID"`
	Types    []atnaCode `xml:"EventTypeCode,omitempty"`
	Desc     string     `xml:"EventOutcomeDescription,omitempty"`
}

type atnaParticipant struct {
	UserID      string   `xml:"UserID,attr"`
	AltUserID   string   `xml:"AlternativeUserID,attr,omitempty"`
	UserName    string   `xml:"UserName,attr,omitempty"`
	IsRequestor bool     `xml:"UserIsRequestor,attr"`
	NAPID       string   `xml:"NetworkAccessPointID,attr,omitempty"`
	NAPType     string   `xml:"NetworkAccessPointTypeCode,attr,omitempty"` // 1 machine name, 2 IP address
	Role        atnaCode `xml:"RoleIDCode"`
}

type atnaSource struct {
	ID   string `xml:"AuditSourceID,attr"`
	Type struct {
		Code string `xml:"code,attr"`
	} `xml:"AuditSourceTypeCode"`
}

type atnaObject struct {
	ID       string        `xml:"ParticipantObjectID,attr"`
	Type     int           `xml:"ParticipantObjectTypeCode,attr"`     // 1 person, 2 system object
	Role     int           `xml:"ParticipantObjectTypeCodeRole,attr"` // 1 patient, 3 report, 24 query
	IDType   atnaCode      `xml:"ParticipantObjectIDTypeCode"`
	SOPClass *atnaSOPClass `xml:"ParticipantObjectDescription>SOPClass,omitempty"`
}

type atnaSOPClass struct {
	UID       string `xml:"UID,attr"`
	Count     int    `xml:"NumberOfInstances,attr"`
	Instances []struct {
		UID string `xml:"UID,attr"`
	} `xml:"Instance,omitempty"`
}

// ATNA renders e as a DICOM PS3.15 A.5 AuditMessage (RFC 3881 structure
// with DICOM codes). host names the edge (AuditSourceID, its network
// access point).
func ATNA(e *Event, host string) []byte {
	m := atnaMessage{}
	m.Event.DateTime = e.Time.UTC().Format(TimeFormat)
	m.Event.Outcome = outcome(e)
	m.Event.Action = "E"
	m.Source.ID = host
	m.Source.Type.Code = "4" // application server process
	edgeAE := strings.TrimSpace(e.CalledAE)
	edge := atnaParticipant{UserID: orDefault(edgeAE, "dicomedge"), IsRequestor: false,
		NAPID: host, NAPType: "1", Role: codeDestinationRole}
	if edgeAE != "" {
		edge.AltUserID = "AETITLES=" + edgeAE
	}
	peer := atnaParticipant{IsRequestor: true, Role: codeSourceRole}
	peer.UserID = orDefault(clientID(e.Client), e.Remote)
	if ae := strings.TrimSpace(e.CallingAE); ae != "" {
		peer.AltUserID = "AETITLES=" + ae
	}
	if e.Client != nil {
		peer.UserName = e.Client.CN
	}
	if h, _, err := net.SplitHostPort(e.Remote); err == nil {
		peer.NAPID, peer.NAPType = h, "2"
	}
	if peer.UserID == "" {
		peer.UserID = "unknown"
	}

	switch e.Event {
	case EventTLSFailed:
		m.Event.ID, m.Event.Types = codeSecurityAlert, []atnaCode{codeNodeAuthentication}
		m.Event.Desc = "TLS handshake failed: " + e.Reason
		if e.Client != nil && e.Client.Fingerprint != "" {
			// The requestor's name is what its certificate claims; only
			// the fingerprint identifies it.
			m.Event.Desc += "; presented certificate (unverified) " + e.Client.Fingerprint
		}
		m.Participants = []atnaParticipant{peer, edge}
	case EventTLSExpiring:
		m.Event.ID, m.Event.Types = codeSecurityAlert, []atnaCode{codeNodeAuthentication}
		m.Event.Desc = "client certificate expires soon: " + e.Detail
		m.Participants = []atnaParticipant{peer, edge}
	case EventConnectionRefused:
		m.Event.ID, m.Event.Types = codeSecurityAlert, []atnaCode{codeNodeAuthentication}
		m.Event.Desc = "connection refused: " + e.Reason
		m.Participants = []atnaParticipant{peer, edge}
	case EventAccepted, EventRejected:
		m.Event.ID, m.Event.Types = codeUserAuthentication, []atnaCode{codeLogin}
		if e.Event == EventRejected {
			m.Event.Desc = fmt.Sprintf("association rejected: %s (result %d, source %d, reason %d)", e.Reason, e.Result, e.Source, e.ReasonCode)
		}
		m.Participants = []atnaParticipant{peer, edge}
	case EventReleased, EventAborted:
		m.Event.ID, m.Event.Types = codeUserAuthentication, []atnaCode{codeLogout}
		if e.Event == EventAborted {
			m.Event.Desc = strings.TrimSpace("association aborted " + e.AbortSource + " " + e.AbortReason)
		}
		m.Participants = []atnaParticipant{peer, edge}
	case EventDIMSE:
		switch e.Service {
		case "C-STORE":
			m.Event.ID, m.Event.Action = codeInstancesTransfer, "C"
		case "C-GET", "C-MOVE":
			m.Event.ID, m.Event.Action = codeInstancesTransfer, "R"
		case "C-FIND":
			m.Event.ID = codeQuery
		default:
			m.Event.ID = codeApplicationActivity
		}
		if m.Event.Outcome != 0 {
			m.Event.Desc = strings.TrimSpace(e.Service + " status " + e.Status)
			if e.Allowed != nil && !*e.Allowed {
				m.Event.Desc = e.Service + " refused by policy"
			}
		}
		m.Participants = []atnaParticipant{peer, edge}
		if e.SOPClass != "" {
			o := atnaObject{ID: e.SOPClass, Type: 2, Role: 3, IDType: codeSOPClassUID}
			if e.StudyUID != "" {
				// PS3.15 A.5.3.2: the study transferred is the participant
				// object, its SOP Class and instances in the description.
				o.ID, o.IDType = e.StudyUID, codeStudyInstanceUID
			}
			if e.Service == "C-FIND" {
				o.Role = 24
			}
			if e.SOPInstance != "" {
				o.SOPClass = &atnaSOPClass{UID: e.SOPClass, Count: 1}
				o.SOPClass.Instances = append(o.SOPClass.Instances, struct {
					UID string `xml:"UID,attr"`
				}{e.SOPInstance})
			}
			m.Objects = append(m.Objects, o)
		}
		if e.PatientID != "" {
			m.Objects = append(m.Objects, atnaObject{ID: e.PatientID, Type: 1, Role: 1, IDType: codePatientNumber})
		}
	default: // policy.reloaded, policy.reload_failed, cert.renewed, audit.anchor_mismatch
		m.Event.ID, m.Event.Types = codeSecurityAlert, []atnaCode{codeSecurityConfig}
		m.Event.Desc = strings.TrimSpace(e.Event + " " + e.Detail)
		m.Participants = []atnaParticipant{{UserID: "dicomedge", IsRequestor: true, NAPID: host, NAPType: "1", Role: codeApplication}}
	}
	b, err := xml.Marshal(m)
	if err != nil {
		// Only invalid UTF-8 can fail here; encoding/xml escapes the rest.
		b = []byte("<AuditMessage/>")
	}
	return append([]byte(xml.Header[:len(xml.Header)-1]), b...)
}

func clientID(c *Client) string {
	switch {
	case c == nil:
		return ""
	case c.Subject != "":
		return c.Subject
	case c.CN != "":
		return c.CN
	case len(c.URI) > 0:
		return c.URI[0]
	case len(c.DNS) > 0:
		return c.DNS[0]
	}
	return c.Fingerprint
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
