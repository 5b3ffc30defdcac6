package inspect

import (
	"fmt"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/deid"
)

// Side is one end of the association.
type Side uint8

const (
	// Requestor is the association requestor side (it sent the A-ASSOCIATE-RQ).
	Requestor Side = iota
	// Acceptor is the association acceptor side.
	Acceptor
)

// Other is the side across the relay.
func (s Side) Other() Side { return 1 - s }

func (s Side) String() string {
	if s == Requestor {
		return "requestor"
	}
	return "acceptor"
}

// Context is one accepted presentation context (PS3.8 9.3.3.2).
type Context struct {
	ID             uint8
	AbstractSyntax string
	TransferSyntax string
}

// Policy is what the matched rule allows (policy.Decision implements it).
type Policy interface {
	AllowsService(name string) bool
	AllowsSOPClass(uid string) bool
	AllowsMoveDestination(ae string) bool
}

// Limits bound what an Inspector holds for one association.
const (
	// MaxCommandBytes bounds a command set held while its fragments arrive,
	// counted as it came on the wire: each fragment's data and its 6-byte
	// PDV item header (length, context ID, control header), so fragments
	// with no data still use up the bound. Real command sets are a few
	// hundred bytes.
	MaxCommandBytes = dimse.DefaultMaxCommandSize
	// MaxCommandFragments bounds the PDVs one command set may span.
	MaxCommandFragments = dimse.MaxCommandFragments
	// MaxOutstanding bounds the operations one side may have outstanding
	// (requests not yet finally answered).
	MaxOutstanding = 256
)

// pdvHeaderLen is a PDV item's header: 4-byte length, context ID, control
// header (PS3.8 9.3.5.1).
const pdvHeaderLen = 6

// Config is what an Inspector is built from.
type Config struct {
	Contexts []Context
	// RequestorSCP lists the abstract syntaxes for which role selection
	// gave the requestor the SCP role (PS3.7 D.3.3.4): the acceptor may send
	// requests of those SOP classes (C-GET sub-operations, for one).
	RequestorSCP []string
	Policy       Policy
	Rule         string // the rule's name, for the reasons given
	// MaxPDU is the largest PDU each side accepts (the negotiated maximum
	// length, clamped to the edge's own); PDUs the Inspector builds for a
	// side fit it.
	MaxPDU [2]uint32
	// ScanPatientID: C-STORE data sets are scanned for Patient ID (0010,0020)
	// and Study Instance UID (0020,000D) for the audit record.
	ScanPatientID bool
	// AllowUnsortedDataSets: a C-STORE data set whose top-level elements
	// are not in strictly ascending tag order, or that repeats a tag
	// (PS3.5 7.1), passes, noted in its record, and its Patient ID is the
	// first; without it such a data set is a protocol violation
	// (malformed-data-set) found before its last fragment goes across.
	// Every C-STORE data set is checked either way.
	AllowUnsortedDataSets bool
	// Filter, when set, may replace the data set a message carries on its
	// way across (e.g. an attribute rewritten in C-FIND responses); nil
	// or a nil DataFilter forwards data sets unchanged.
	Filter func(from Side, cmd *dimse.Command, ctx Context) DataFilter
	// Deidentify, when set, de-identifies every C-STORE data set of the
	// requestor by this profile (docs/deidentify.md).
	Deidentify *deid.Profile
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DataFilter rewrites one data set as its fragments pass: Filter gets each
// fragment's data in order (last on the final one) and returns the bytes
// to forward in its place, appended to dst. What it holds between calls
// must be bounded.
type DataFilter interface {
	Filter(dst, data []byte, last bool) []byte
}

// Verdict is the Inspector's answer to one P-DATA-TF.
type Verdict struct {
	// Pass: forward the PDU as it came. Otherwise Forward holds the whole
	// PDUs to send across instead (possibly none).
	Pass    bool
	Forward []byte
	// Reply holds whole PDUs the edge sends back to the sender: the
	// responses to requests it refused.
	Reply []byte
	// Records are the dimse audit records completed by this PDU.
	Records []Record
	// Violation, when set, is a protocol violation: abort the association
	// on both sides (the sender with Violation.Reason); nothing else of
	// this verdict is to be sent.
	Violation *Violation
	// Notes are decisions worth a log line (refusals, dropped C-CANCELs).
	Notes []Note
}

// Note is one decision the relay logs.
type Note struct {
	Msg  string
	Args []any
}

// Violation is a breach of the DIMSE conversation (PS3.7, PS3.8) by From.
type Violation struct {
	From   Side
	Reason association.AbortReason // for the A-ABORT to From
	Msg    string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("DIMSE protocol violation by the association %s side: %s", v.From, v.Msg)
}

// ProtocolError is v as the association package's error, for code that
// maps those to A-ABORTs.
func (v *Violation) ProtocolError() *association.ProtocolError {
	return &association.ProtocolError{Reason: v.Reason, Msg: v.Msg}
}

// Inspector judges one association's DIMSE conversation. The two pumps of
// a relay may call it at once: each Feed judges one PDU under the
// Inspector's own lock (never during I/O). A Verdict's buffers belong to
// the side it was fed from and stay valid until that side's next Feed or
// Release.
type Inspector struct {
	cfg      Config
	contexts []Context
	ctxIndex [128]uint8 // by (ID-1)/2 (IDs are odd, PS3.8 9.3.2.2): 1 + the context's index in contexts, 0 for none
	scp      map[string]bool

	mu     sync.Mutex
	sides  [2]stream
	ledger ledger
	failed *Violation
}

// New returns an Inspector for the association cfg describes.
func New(cfg Config) *Inspector {
	in := &Inspector{cfg: cfg, scp: map[string]bool{}}
	if in.cfg.Now == nil {
		in.cfg.Now = time.Now
	}
	for _, c := range cfg.Contexts {
		if c.ID%2 == 0 || in.ctxIndex[c.ID/2] != 0 || len(in.contexts) >= len(in.ctxIndex) {
			continue // not a valid accepted context (the codec refuses these)
		}
		c.AbstractSyntax, c.TransferSyntax = trimUID(c.AbstractSyntax), trimUID(c.TransferSyntax)
		in.contexts = append(in.contexts, c)
		in.ctxIndex[c.ID/2] = uint8(len(in.contexts))
	}
	for _, uid := range cfg.RequestorSCP {
		in.scp[trimUID(uid)] = true
	}
	for s := range in.sides {
		in.sides[s].side = Side(s)
		in.sides[s].fwd.max = pduMax(cfg.MaxPDU[Side(s).Other()])
		in.sides[s].reply.max = pduMax(cfg.MaxPDU[s])
	}
	in.ledger.init()
	return in
}

// context is the accepted presentation context id, or nil.
func (in *Inspector) context(id uint8) *Context {
	if id%2 == 0 {
		return nil
	}
	if i := in.ctxIndex[id/2]; i != 0 {
		return &in.contexts[i-1]
	}
	return nil
}

// State is the conversation state of side's stream.
func (in *Inspector) State(side Side) State {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.sides[side].state
}

// Feed judges one P-DATA-TF PDU (header included) that from sent.
func (in *Inspector) Feed(from Side, pdu []byte) Verdict {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := &in.sides[from]
	st.begin(pdu)
	if in.failed != nil {
		return Verdict{Violation: in.failed}
	}
	if len(pdu) < association.HeaderLen || association.PDUType(pdu[0]) != association.TypePDataTF {
		return in.fail(&Violation{From: from, Reason: association.AbortUnexpectedPDU, Msg: "not a P-DATA-TF PDU"})
	}
	if uint32(len(pdu)-association.HeaderLen) > st.fwd.max {
		// Longer than the other side takes (the sender was offered more):
		// rebuilt, its PDVs cut to fit.
		n := len(pdu) - association.HeaderLen
		st.fwd.grow(n + (n/int(st.fwd.max)+2)*(association.HeaderLen+pdvHeaderLen))
		st.change()
	}
	err := association.EachPDV(pdu[association.HeaderLen:], func(p association.PDV) error {
		if v := in.pdv(st, p); v != nil {
			return v
		}
		return nil
	})
	if err != nil {
		v, ok := err.(*Violation)
		if !ok {
			// Malformed PDV items: the codec's own reason.
			ab := association.AbortFor(err)
			v = &Violation{From: from, Reason: ab.Reason, Msg: err.Error()}
		}
		// What this PDU decided before the violation is still recorded
		// (a refusal, say); nothing of it is sent, so the requests it
		// allowed are recorded as not forwarded.
		in.ledger.unsent(st, in.cfg.Now())
		vd := in.fail(v)
		vd.Records, vd.Notes = st.records, st.notes
		return vd
	}
	return st.verdict()
}

func (in *Inspector) fail(v *Violation) Verdict {
	in.failed = v
	for s := range in.sides {
		in.sides[s].dropHeld()
	}
	return Verdict{Violation: v}
}

// Release gives back the buffers of side's last Verdict (call it once the
// verdict is applied, so an idle association holds none of them).
func (in *Inspector) Release(side Side) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.sides[side].release()
}

// Finish ends the ledger: the records of every operation the association
// ended before it completed (requests with no final response or with their
// data set cut short, status absent; requests of the acceptor side never
// answered). The Inspector judges nothing after it.
func (in *Inspector) Finish() []Record {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.failed == nil {
		in.failed = &Violation{Reason: association.AbortReasonNotSpecified, Msg: "association ended"}
	}
	for s := range in.sides {
		in.sides[s].dropHeld()
	}
	return in.ledger.finish(&in.sides, in.cfg.Now())
}

// pduMax is the PDU length to build for a side that accepts max (0: no
// limit, PS3.8 D.1.1). The relay refuses an RQ or AC below
// association.MinMaxLength; were one to come, it gets PDVs of one data byte.
func pduMax(n uint32) uint32 {
	if n == 0 || n > 1<<30 {
		return dimse.DefaultFragment
	}
	return max(n, association.MinMaxLength)
}

func trimUID(s string) string {
	for len(s) > 0 && (s[len(s)-1] == 0 || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
