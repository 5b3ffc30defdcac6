package association

import (
	"errors"
	"io"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// HeaderLen is the size of the fixed PDU header: type, reserved, 4-byte length.
const HeaderLen = 6

// PDU is one of *AssociateRQ, *AssociateAC, *AssociateRJ, *PDataTF,
// *ReleaseRQ, *ReleaseRP, *Abort.
type PDU interface{ Type() PDUType }

// AssociateRQ is an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2). AE titles are held
// without padding; Extra keeps items this package does not know, in the
// order received, so a relay can forward them.
type AssociateRQ struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInfo             UserInfo
	Extra                []RawItem
}

// AssociateAC is an A-ASSOCIATE-AC PDU (PS3.8 9.3.3). The AE title fields
// are reserved in the AC but carry the RQ's values by convention.
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInfo             UserInfo
	Extra                []RawItem
}

// PresentationContextRQ is item 0x20 (PS3.8 9.3.2.2).
type PresentationContextRQ struct {
	ID               uint8
	AbstractSyntax   string
	TransferSyntaxes []string
	Extra            []RawItem // unknown sub-items
}

// PresentationContextAC is item 0x21 (PS3.8 9.3.3.2). TransferSyntax may be
// empty when Result is not acceptance: some peers send no sub-item then.
type PresentationContextAC struct {
	ID             uint8
	Result         PCResult
	TransferSyntax string
	Extra          []RawItem // unknown sub-items
}

// UserInfo is item 0x50 and its sub-items (PS3.8 D.1, PS3.7 D.3.3).
// MaxLength 0 with HasMaxLength means "no limit" (PS3.8 D.1.1).
type UserInfo struct {
	MaxLength                  uint32
	HasMaxLength               bool
	ImplementationClassUID     string
	ImplementationVersionName  string
	AsyncOps                   *AsyncOpsWindow
	RoleSelections             []RoleSelection
	ExtendedNegotiations       []ExtendedNegotiation
	CommonExtendedNegotiations []CommonExtendedNegotiation
	UserIdentityRQ             *UserIdentityRQ
	UserIdentityAC             *UserIdentityAC
	Extra                      []RawItem
}

// MaxPDULength returns the peer's limit on the P-DATA-TF PDU length and
// whether there is one (absent item or 0 means unlimited).
func (u *UserInfo) MaxPDULength() (uint32, bool) {
	if !u.HasMaxLength || u.MaxLength == 0 {
		return 0, false
	}
	return u.MaxLength, true
}

// AsyncOpsWindow is sub-item 0x53 (PS3.7 D.3.3.3).
type AsyncOpsWindow struct{ MaxInvoked, MaxPerformed uint16 }

// RoleSelection is sub-item 0x54 (PS3.7 D.3.3.4).
type RoleSelection struct {
	SOPClassUID string
	SCU, SCP    bool
}

// ExtendedNegotiation is sub-item 0x56 (PS3.7 D.3.3.5).
type ExtendedNegotiation struct {
	SOPClassUID string
	Info        []byte // service-class-application-information
}

// CommonExtendedNegotiation is sub-item 0x57 (PS3.7 D.3.3.6).
type CommonExtendedNegotiation struct {
	SOPClassUID              string
	ServiceClassUID          string
	RelatedGeneralSOPClasses []string
}

// UserIdentityRQ is sub-item 0x58 (PS3.7 D.3.3.7.1). Secondary holds a
// passcode for type 2: never log it.
type UserIdentityRQ struct {
	Type                      UserIdentityType
	PositiveResponseRequested bool
	Primary, Secondary        []byte
}

// UserIdentityAC is sub-item 0x59 (PS3.7 D.3.3.7.2).
type UserIdentityAC struct{ ServerResponse []byte }

// RawItem is an item or sub-item this package does not interpret, kept so it
// can be re-encoded unchanged.
type RawItem struct {
	Type uint8
	Data []byte
}

// AssociateRJ is an A-ASSOCIATE-RJ PDU (PS3.8 9.3.4).
type AssociateRJ struct {
	Result RejectResult
	Source RejectSource
	Reason RejectReason
}

// ReasonName is RejectReasonName(rj.Source, rj.Reason).
func (rj *AssociateRJ) ReasonName() string { return RejectReasonName(rj.Source, rj.Reason) }

// PDataTF is a P-DATA-TF PDU (PS3.8 9.3.5).
type PDataTF struct{ PDVs []PDV }

// PDV is one presentation data value item. Command and Last are bits 0 and 1
// of the message control header (PS3.8 E.2).
type PDV struct {
	ContextID     uint8
	Command, Last bool
	Data          []byte
}

// ReleaseRQ is an A-RELEASE-RQ PDU (PS3.8 9.3.6).
type ReleaseRQ struct{}

// ReleaseRP is an A-RELEASE-RP PDU (PS3.8 9.3.7).
type ReleaseRP struct{}

// Abort is an A-ABORT PDU (PS3.8 9.3.8).
type Abort struct {
	Source AbortSource
	Reason AbortReason
}

func (*AssociateRQ) Type() PDUType { return TypeAssociateRQ }
func (*AssociateAC) Type() PDUType { return TypeAssociateAC }
func (*AssociateRJ) Type() PDUType { return TypeAssociateRJ }
func (*PDataTF) Type() PDUType     { return TypePDataTF }
func (*ReleaseRQ) Type() PDUType   { return TypeReleaseRQ }
func (*ReleaseRP) Type() PDUType   { return TypeReleaseRP }
func (*Abort) Type() PDUType       { return TypeAbort }

// Item and sub-item types (PS3.8 9.3.2, Annex D; PS3.7 Annex D.3.3).
const (
	ItemApplicationContext        = 0x10
	ItemPresentationContextRQ     = 0x20
	ItemPresentationContextAC     = 0x21
	ItemAbstractSyntax            = 0x30
	ItemTransferSyntax            = 0x40
	ItemUserInfo                  = 0x50
	ItemMaxLength                 = 0x51
	ItemImplementationClassUID    = 0x52
	ItemAsyncOpsWindow            = 0x53
	ItemRoleSelection             = 0x54
	ItemImplementationVersionName = 0x55
	ItemExtendedNegotiation       = 0x56
	ItemCommonExtendedNegotiation = 0x57
	ItemUserIdentityRQ            = 0x58
	ItemUserIdentityAC            = 0x59
)

var errEncode = errors.New("association: value does not fit its field")

// Decode parses a PDU body (the bytes after the 6-byte header). Malformed
// input gives a *ProtocolError. Strings and byte fields are copies, except
// that a P-DATA-TF's PDV Data alias body.
func Decode(typ PDUType, body []byte) (PDU, error) {
	switch typ {
	case TypeAssociateRQ:
		rq := new(AssociateRQ)
		if err := decodeAssociate(body, rqFields(rq), false); err != nil {
			return nil, err
		}
		return rq, nil
	case TypeAssociateAC:
		ac := new(AssociateAC)
		if err := decodeAssociate(body, acFields(ac), true); err != nil {
			return nil, err
		}
		return ac, nil
	case TypeAssociateRJ:
		if len(body) != 4 {
			return nil, protoErr(AbortInvalidPDUParameterValue, "A-ASSOCIATE-RJ length %d, want 4", len(body))
		}
		return &AssociateRJ{Result: RejectResult(body[1]), Source: RejectSource(body[2]), Reason: RejectReason(body[3])}, nil
	case TypePDataTF:
		p := &PDataTF{}
		n := 0
		if err := EachPDV(body, func(PDV) error { n++; return nil }); err != nil {
			return nil, err
		}
		p.PDVs = make([]PDV, 0, n)
		_ = EachPDV(body, func(v PDV) error { p.PDVs = append(p.PDVs, v); return nil })
		return p, nil
	case TypeReleaseRQ, TypeReleaseRP:
		if len(body) != 4 {
			return nil, protoErr(AbortInvalidPDUParameterValue, "%v length %d, want 4", typ, len(body))
		}
		if typ == TypeReleaseRQ {
			return &ReleaseRQ{}, nil
		}
		return &ReleaseRP{}, nil
	case TypeAbort:
		if len(body) != 4 {
			return nil, protoErr(AbortInvalidPDUParameterValue, "A-ABORT length %d, want 4", len(body))
		}
		return &Abort{Source: AbortSource(body[2]), Reason: AbortReason(body[3])}, nil
	}
	return nil, protoErr(AbortUnrecognizedPDU, "PDU type 0x%02x", uint8(typ))
}

// EachPDV calls fn for each PDV item of a P-DATA-TF body without allocating;
// the PDV's Data aliases body. It stops at the first error from fn.
func EachPDV(body []byte, fn func(PDV) error) error {
	if len(body) == 0 {
		return protoErr(AbortInvalidPDUParameterValue, "P-DATA-TF without PDV items")
	}
	for len(body) > 0 {
		if len(body) < 6 {
			return protoErr(AbortInvalidPDUParameterValue, "truncated PDV item header")
		}
		n := uint32(body[0])<<24 | uint32(body[1])<<16 | uint32(body[2])<<8 | uint32(body[3])
		if n < 2 || uint64(n) > uint64(len(body)-4) {
			return protoErr(AbortInvalidPDUParameterValue, "PDV item length %d with %d bytes left", n, len(body)-4)
		}
		mch := body[5]
		if mch&^3 != 0 {
			// Bits 2-7 of the message control header are always 0 (PS3.8
			// E.2); a relay forwarding the PDV as it came would pass them on.
			return protoErr(AbortInvalidPDUParameterValue, "PDV message control header 0x%02x sets reserved bits", mch)
		}
		v := PDV{ContextID: body[4], Command: mch&1 != 0, Last: mch&2 != 0, Data: body[6 : 4+n : 4+n]}
		if err := fn(v); err != nil {
			return err
		}
		body = body[4+n:]
	}
	return nil
}

// Append appends the whole encoded PDU, header included, to dst.
func Append(dst []byte, p PDU) ([]byte, error) {
	if p == nil {
		return dst, errEncode
	}
	b := cryptobyte.NewBuilder(dst)
	b.AddUint8(uint8(p.Type()))
	b.AddUint8(0)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
		switch p := p.(type) {
		case *AssociateRQ:
			encodeAssociate(b, rqFields(p))
		case *AssociateAC:
			encodeAssociate(b, acFields(p))
		case *AssociateRJ:
			b.AddBytes([]byte{0, uint8(p.Result), uint8(p.Source), uint8(p.Reason)})
		case *PDataTF:
			for _, v := range p.PDVs {
				b.AddUint32(uint32(len(v.Data) + 2))
				b.AddUint8(v.ContextID)
				b.AddUint8(v.MessageControlHeader())
				b.AddBytes(v.Data)
			}
		case *ReleaseRQ, *ReleaseRP:
			b.AddUint32(0)
		case *Abort:
			b.AddBytes([]byte{0, 0, uint8(p.Source), uint8(p.Reason)})
		default:
			b.SetError(errEncode)
		}
	})
	return b.Bytes()
}

// MessageControlHeader is the PDV's control byte: bit 0 command, bit 1 last.
func (v PDV) MessageControlHeader() uint8 {
	var h uint8
	if v.Command {
		h |= 1
	}
	if v.Last {
		h |= 2
	}
	return h
}

// WritePDU encodes p and writes it with a single Write call, so concurrent
// writers serialised by the caller never interleave partial PDUs.
func WritePDU(w io.Writer, p PDU) error {
	buf, err := Append(make([]byte, 0, 256), p)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// TrimAE is the one normalisation of an AE title, used wherever titles are
// compared: it drops the space padding (leading and trailing spaces are not
// significant, PS3.5 6.2, VR AE) and the NUL padding some peers use.
func TrimAE(s string) string { return strings.Trim(s, " \x00") }

func trimAE(b []byte) string { return TrimAE(string(b)) }

// ValidAE reports whether s, as TrimAE returns it, is a value of VR AE
// (PS3.5 6.2): at most 16 characters of the default repertoire (printable
// ASCII) other than backslash, which is the multi-value delimiter. Control
// characters, NULs inside the title and bytes over 0x7e are refused, so two
// parsers cannot read the same bytes as two different titles. An empty
// title is valid here; whether it matches anything is policy's business.
func ValidAE(s string) bool {
	if len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return false
		}
	}
	return true
}

// trimUID drops a trailing NUL pad (and stray spaces) from a UID. Common
// UIDs come from a table, so a 120-context RQ does not allocate a string
// per transfer syntax.
func trimUID(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == 0 || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	if s, ok := commonUIDs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	return string(b)
}

var commonUIDs = func() map[string]string {
	m := map[string]string{}
	for _, uid := range []string{DICOMApplicationContext, VerificationSOPClass, ImplicitVRLittleEndian, ExplicitVRLittleEndian,
		DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGLosslessSV1, JPEG2000Lossless, JPEG2000,
		RLELossless, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"} {
		m[uid] = uid
	}
	return m
}()

// ClampMaxLength lowers the maximum-length sub-item to limit when it is
// absent, 0 (unlimited) or larger, as the edge does in both directions so
// neither peer sends PDUs over what the edge accepts. limit 0 does nothing.
func (u *UserInfo) ClampMaxLength(limit uint32) {
	if limit == 0 {
		return
	}
	if !u.HasMaxLength || u.MaxLength == 0 || u.MaxLength > limit {
		u.MaxLength, u.HasMaxLength = limit, true
	}
}

// User returns the user name of a username or username-passcode identity,
// the only part fit for logs and the audit trail; "" for the other types,
// whose primary field is a ticket, assertion or token.
func (u *UserIdentityRQ) User() string {
	if u.Type == UserIdentityUsername || u.Type == UserIdentityUsernamePasscode {
		return string(u.Primary)
	}
	return ""
}
