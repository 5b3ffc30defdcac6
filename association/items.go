package association

import (
	"golang.org/x/crypto/cryptobyte"
)

// assocFields lets one decoder and one encoder serve both A-ASSOCIATE-RQ and
// -AC, which differ only in their presentation context items.
type assocFields struct {
	version         *uint16
	called, calling *string
	appCtx          *string
	ui              *UserInfo
	extra           *[]RawItem
	pcRQ            *[]PresentationContextRQ
	pcAC            *[]PresentationContextAC
}

func rqFields(p *AssociateRQ) *assocFields {
	return &assocFields{&p.ProtocolVersion, &p.CalledAE, &p.CallingAE, &p.ApplicationContext, &p.UserInfo, &p.Extra, &p.PresentationContexts, nil}
}

func acFields(p *AssociateAC) *assocFields {
	return &assocFields{&p.ProtocolVersion, &p.CalledAE, &p.CallingAE, &p.ApplicationContext, &p.UserInfo, &p.Extra, nil, &p.PresentationContexts}
}

// MaxPresentationContexts is the most presentation context items an
// A-ASSOCIATE-RQ or -AC may hold: their IDs are odd integers from 1 to 255
// and unique (PS3.8 9.3.2.2), so no valid PDU has more.
const MaxPresentationContexts = 128

// MaxAssociateLength bounds the length field of an A-ASSOCIATE-RQ or -AC,
// which the negotiated maximum PDU length does not cover (it applies to
// P-DATA-TF). 128 contexts of a dozen transfer syntaxes each take about
// 40 KiB, and the user information item at most 64 KiB (its length field
// is 16 bits), so a real peer's PDU fits; a larger one is a peer trying to
// make the edge decode and hold more than any negotiation needs.
const MaxAssociateLength = 128 << 10

// maxListItems bounds every other list an A-ASSOCIATE PDU decodes into:
// transfer syntaxes per context, role-selection and (common) extended
// negotiation sub-items (at most one per proposed SOP class, PS3.7 D.3.3.4),
// and unknown items kept raw. Each entry costs 16 to 72 bytes for a 4-byte
// item, so without a count a peer could multiply its bytes in our memory.
const maxListItems = 128

// appendBounded appends v to *list unless that would exceed maxListItems.
func appendBounded[T any](list *[]T, v T, what string) error {
	if len(*list) >= maxListItems {
		return invalid("more than %d %s", maxListItems, what)
	}
	*list = append(*list, v)
	return nil
}

func invalid(format string, args ...any) *ProtocolError {
	return protoErr(AbortInvalidPDUParameterValue, format, args...)
}

// maxUID is the longest UID (PS3.5 9.1) and maxVersionName the longest
// implementation version name (PS3.7 D.3.3.2.3): what the edge rebuilds into
// the PDUs it sends is bounded by the standard, not by a 16-bit item length,
// so no peer receives from it a value longer than it has room for.
const (
	maxUID         = 64
	maxVersionName = 16
)

// uid is a UID item's value, trimmed; err when it is longer than maxUID
// or not a UID's characters.
func uid(b []byte, what string) (string, error) {
	s := trimUID(b)
	if len(s) > maxUID {
		return "", invalid("%s of %d bytes, more than a UID's %d", what, len(s), maxUID)
	}
	if !uidChars(s) {
		return "", invalid("%s %q has characters other than digits and '.'", what, s)
	}
	return s, nil
}

// uidChars reports whether s holds only what a UID may (PS3.5 9.1: digits
// and '.'; the trailing NUL pad is already trimmed). A NUL, control
// character or non-ASCII byte inside would be read as another UID by a
// peer that stops at the NUL, and would reach the audit and the backend.
func uidChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// printableASCII reports whether s is of the default character repertoire
// without control characters (ISO 646 G0), as an implementation version
// name must be (PS3.7 D.3.3.2.3).
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// findSOPClass reports whether one of list's n entries names uid: PS3.7
// D.3.3.4-D.3.3.6 allow one role selection, extended negotiation and common
// extended negotiation sub-item per SOP class, and a peer reading the first
// of two must not see another negotiation than the edge reading the last.
// The lists are bounded by maxListItems, so the scan stays small.
func findSOPClass[T any](list []T, uid string, key func(*T) string) bool {
	for i := range list {
		if key(&list[i]) == uid {
			return true
		}
	}
	return false
}

// readItem reads one item header and body: type, reserved, 2-byte length.
func readItem(s *cryptobyte.String) (typ uint8, body cryptobyte.String, ok bool) {
	ok = s.ReadUint8(&typ) && s.Skip(1) && s.ReadUint16LengthPrefixed(&body)
	return typ, body, ok
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func decodeAssociate(body []byte, f *assocFields, isAC bool) error {
	if len(body) > MaxAssociateLength {
		return invalid("A-ASSOCIATE length %d exceeds %d", len(body), MaxAssociateLength)
	}
	s := cryptobyte.String(body)
	var called, calling []byte
	// Protocol version, 2 reserved, called AE (16), calling AE (16), 32 reserved.
	if !s.ReadUint16(f.version) || !s.Skip(2) || !s.ReadBytes(&called, 16) || !s.ReadBytes(&calling, 16) || !s.Skip(32) {
		return invalid("A-ASSOCIATE fixed fields truncated (%d bytes)", len(body))
	}
	*f.called, *f.calling = trimAE(called), trimAE(calling)
	// An AC's AE fields are not to be tested (PS3.8 9.3.3); an RQ's are
	// what policy matches and the backend reads, so they must be AE values.
	if !isAC && (!ValidAE(*f.called) || !ValidAE(*f.calling)) {
		return invalid("AE title %q or %q has a control character, backslash or non-ASCII byte", *f.called, *f.calling)
	}
	var seenCtx, seenUI bool
	var seenID [256]bool // context IDs, odd and unique (PS3.8 9.3.2.2, 9.3.3.2)
	checkID := func(id uint8) error {
		if id%2 == 0 || seenID[id] {
			return invalid("presentation context ID %d is even or repeated", id)
		}
		seenID[id] = true
		return nil
	}
	for !s.Empty() {
		typ, item, ok := readItem(&s)
		if !ok {
			return invalid("item header or length overruns the PDU")
		}
		switch {
		case typ == ItemApplicationContext:
			if seenCtx {
				return protoErr(AbortUnexpectedPDUParameter, "second application context item")
			}
			seenCtx = true
			var err error
			if *f.appCtx, err = uid(item, "application context name"); err != nil {
				return err
			}
		case typ == ItemPresentationContextRQ && !isAC:
			pc, err := decodePCRQ(item)
			if err != nil {
				return err
			}
			if err := checkID(pc.ID); err != nil {
				return err
			}
			*f.pcRQ = append(*f.pcRQ, pc)
		case typ == ItemPresentationContextAC && isAC:
			pc, err := decodePCAC(item)
			if err != nil {
				return err
			}
			if err := checkID(pc.ID); err != nil {
				return err
			}
			*f.pcAC = append(*f.pcAC, pc)
		case typ == ItemUserInfo:
			if seenUI {
				return protoErr(AbortUnexpectedPDUParameter, "second user information item")
			}
			seenUI = true
			if err := decodeUserInfo(item, f.ui); err != nil {
				return err
			}
		default:
			if err := appendBounded(f.extra, RawItem{Type: typ, Data: clone(item)}, "unknown items"); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodePCRQ(item cryptobyte.String) (PresentationContextRQ, error) {
	var pc PresentationContextRQ
	if !item.ReadUint8(&pc.ID) || !item.Skip(3) {
		return pc, invalid("presentation context item truncated")
	}
	// Count transfer syntaxes first so the slice is allocated once: a
	// modality's RQ has a hundred contexts of several syntaxes each.
	n := 0
	for scan := item; !scan.Empty(); {
		typ, _, ok := readItem(&scan)
		if !ok {
			break
		}
		if typ == ItemTransferSyntax {
			n++
		}
	}
	if n > maxListItems {
		return pc, invalid("presentation context %d: %d transfer syntaxes, more than %d", pc.ID, n, maxListItems)
	}
	if n > 0 {
		pc.TransferSyntaxes = make([]string, 0, n)
	}
	seenAS := false
	for !item.Empty() {
		typ, sub, ok := readItem(&item)
		if !ok {
			return pc, invalid("presentation context %d: sub-item overruns its item", pc.ID)
		}
		switch typ {
		case ItemAbstractSyntax:
			if seenAS {
				return pc, protoErr(AbortUnexpectedPDUParameter, "presentation context %d: second abstract syntax", pc.ID)
			}
			seenAS = true
			var err error
			if pc.AbstractSyntax, err = uid(sub, "abstract syntax"); err != nil {
				return pc, err
			}
		case ItemTransferSyntax:
			ts, err := uid(sub, "transfer syntax")
			if err != nil {
				return pc, err
			}
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, ts)
		default:
			if err := appendBounded(&pc.Extra, RawItem{Type: typ, Data: clone(sub)}, "unknown presentation context sub-items"); err != nil {
				return pc, err
			}
		}
	}
	return pc, nil
}

func decodePCAC(item cryptobyte.String) (PresentationContextAC, error) {
	var pc PresentationContextAC
	var res uint8
	if !item.ReadUint8(&pc.ID) || !item.Skip(1) || !item.ReadUint8(&res) || !item.Skip(1) {
		return pc, invalid("presentation context item truncated")
	}
	pc.Result = PCResult(res)
	seenTS := false
	for !item.Empty() {
		typ, sub, ok := readItem(&item)
		if !ok {
			return pc, invalid("presentation context %d: sub-item overruns its item", pc.ID)
		}
		switch typ {
		case ItemTransferSyntax:
			if seenTS {
				return pc, protoErr(AbortUnexpectedPDUParameter, "presentation context %d: second transfer syntax", pc.ID)
			}
			seenTS = true
			if pc.Result != PCAcceptance {
				// Present on a rejection, but not to be tested (PS3.8
				// 9.3.3.2).
				pc.TransferSyntax = trimUID(sub)
				continue
			}
			var err error
			if pc.TransferSyntax, err = uid(sub, "transfer syntax"); err != nil {
				return pc, err
			}
		default:
			if err := appendBounded(&pc.Extra, RawItem{Type: typ, Data: clone(sub)}, "unknown presentation context sub-items"); err != nil {
				return pc, err
			}
		}
	}
	return pc, nil
}

// readUID reads a 2-byte length-prefixed UID, the form used inside the
// role-selection and extended-negotiation sub-items.
func readUID(s *cryptobyte.String, out *string) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) {
		return false
	}
	*out = trimUID(v)
	return len(*out) <= maxUID && uidChars(*out)
}

func decodeUserInfo(item cryptobyte.String, ui *UserInfo) error {
	var seen uint16 // sub-items 0x50..0x5f that may appear at most once
	for !item.Empty() {
		typ, sub, ok := readItem(&item)
		if !ok {
			return invalid("user information sub-item overruns its item")
		}
		single := typ >= ItemMaxLength && typ <= ItemImplementationVersionName && typ != ItemRoleSelection ||
			typ == ItemUserIdentityRQ || typ == ItemUserIdentityAC
		if single {
			bit := uint16(1) << (typ - ItemUserInfo)
			if seen&bit != 0 {
				return protoErr(AbortUnexpectedPDUParameter, "user information: sub-item 0x%02x repeated", typ)
			}
			seen |= bit
		}
		switch typ {
		case ItemMaxLength:
			if !sub.ReadUint32(&ui.MaxLength) || !sub.Empty() {
				return invalid("maximum length sub-item is not 4 bytes")
			}
			ui.HasMaxLength = true
		case ItemImplementationClassUID:
			var err error
			if ui.ImplementationClassUID, err = uid(sub, "implementation class UID"); err != nil {
				return err
			}
		case ItemImplementationVersionName:
			if ui.ImplementationVersionName = trimAE(sub); len(ui.ImplementationVersionName) > maxVersionName {
				return invalid("implementation version name of %d bytes, more than %d", len(ui.ImplementationVersionName), maxVersionName)
			}
			if !printableASCII(ui.ImplementationVersionName) {
				return invalid("implementation version name %q has a control or non-ASCII character", ui.ImplementationVersionName)
			}
		case ItemAsyncOpsWindow:
			w := new(AsyncOpsWindow)
			if !sub.ReadUint16(&w.MaxInvoked) || !sub.ReadUint16(&w.MaxPerformed) || !sub.Empty() {
				return invalid("asynchronous operations window sub-item is not 4 bytes")
			}
			ui.AsyncOps = w
		case ItemRoleSelection:
			var r RoleSelection
			var scu, scp uint8
			if !readUID(&sub, &r.SOPClassUID) || !sub.ReadUint8(&scu) || !sub.ReadUint8(&scp) || !sub.Empty() {
				return invalid("malformed SCP/SCU role selection sub-item")
			}
			r.SCU, r.SCP = scu != 0, scp != 0
			if findSOPClass(ui.RoleSelections, r.SOPClassUID, func(r *RoleSelection) string { return r.SOPClassUID }) {
				return protoErr(AbortUnexpectedPDUParameter, "second SCP/SCU role selection sub-item for %s", r.SOPClassUID)
			}
			if err := appendBounded(&ui.RoleSelections, r, "role selection sub-items"); err != nil {
				return err
			}
		case ItemExtendedNegotiation:
			var e ExtendedNegotiation
			if !readUID(&sub, &e.SOPClassUID) {
				return invalid("malformed SOP class extended negotiation sub-item")
			}
			e.Info = clone(sub)
			if findSOPClass(ui.ExtendedNegotiations, e.SOPClassUID, func(e *ExtendedNegotiation) string { return e.SOPClassUID }) {
				return protoErr(AbortUnexpectedPDUParameter, "second SOP class extended negotiation sub-item for %s", e.SOPClassUID)
			}
			if err := appendBounded(&ui.ExtendedNegotiations, e, "extended negotiation sub-items"); err != nil {
				return err
			}
		case ItemCommonExtendedNegotiation:
			var c CommonExtendedNegotiation
			var related cryptobyte.String
			if !readUID(&sub, &c.SOPClassUID) || !readUID(&sub, &c.ServiceClassUID) ||
				!sub.ReadUint16LengthPrefixed(&related) || !sub.Empty() {
				return invalid("malformed SOP class common extended negotiation sub-item")
			}
			for !related.Empty() {
				var uid string
				if !readUID(&related, &uid) {
					return invalid("malformed related general SOP class identification")
				}
				if err := appendBounded(&c.RelatedGeneralSOPClasses, uid, "related general SOP classes"); err != nil {
					return err
				}
			}
			if findSOPClass(ui.CommonExtendedNegotiations, c.SOPClassUID, func(c *CommonExtendedNegotiation) string { return c.SOPClassUID }) {
				return protoErr(AbortUnexpectedPDUParameter, "second SOP class common extended negotiation sub-item for %s", c.SOPClassUID)
			}
			if err := appendBounded(&ui.CommonExtendedNegotiations, c, "common extended negotiation sub-items"); err != nil {
				return err
			}
		case ItemUserIdentityRQ:
			var typ, pos uint8
			var prim, sec cryptobyte.String
			if !sub.ReadUint8(&typ) || !sub.ReadUint8(&pos) || !sub.ReadUint16LengthPrefixed(&prim) ||
				!sub.ReadUint16LengthPrefixed(&sec) || !sub.Empty() {
				return invalid("malformed user identity negotiation sub-item")
			}
			ui.UserIdentityRQ = &UserIdentityRQ{Type: UserIdentityType(typ), PositiveResponseRequested: pos == 1,
				Primary: clone(prim), Secondary: clone(sec)}
		case ItemUserIdentityAC:
			var resp cryptobyte.String
			if !sub.ReadUint16LengthPrefixed(&resp) || !sub.Empty() {
				return invalid("malformed user identity server response sub-item")
			}
			ui.UserIdentityAC = &UserIdentityAC{ServerResponse: clone(resp)}
		default:
			if err := appendBounded(&ui.Extra, RawItem{Type: typ, Data: clone(sub)}, "unknown user information sub-items"); err != nil {
				return err
			}
		}
	}
	return nil
}

func addItem(b *cryptobyte.Builder, typ uint8, body func(*cryptobyte.Builder)) {
	b.AddUint8(typ)
	b.AddUint8(0)
	b.AddUint16LengthPrefixed(body)
}

func addString(s string) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) }
}

func addUID16(b *cryptobyte.Builder, uid string) { b.AddUint16LengthPrefixed(addString(uid)) }

func addAE(b *cryptobyte.Builder, ae string) {
	if len(ae) > 16 {
		b.SetError(errEncode)
		return
	}
	var f [16]byte
	copy(f[:], ae)
	for i := len(ae); i < 16; i++ {
		f[i] = ' '
	}
	b.AddBytes(f[:])
}

func addRaw(b *cryptobyte.Builder, items []RawItem) {
	for _, it := range items {
		addItem(b, it.Type, func(b *cryptobyte.Builder) { b.AddBytes(it.Data) })
	}
}

// encodeAssociate writes the A-ASSOCIATE-RQ/AC body: items in the order
// PS3.8 lists them, unknown items after the presentation contexts.
func encodeAssociate(b *cryptobyte.Builder, f *assocFields) {
	b.AddUint16(*f.version)
	b.AddUint16(0)
	addAE(b, *f.called)
	addAE(b, *f.calling)
	b.AddBytes(make([]byte, 32))
	addItem(b, ItemApplicationContext, addString(*f.appCtx))
	if f.pcRQ != nil {
		for _, pc := range *f.pcRQ {
			addItem(b, ItemPresentationContextRQ, func(b *cryptobyte.Builder) {
				b.AddBytes([]byte{pc.ID, 0, 0, 0})
				addItem(b, ItemAbstractSyntax, addString(pc.AbstractSyntax))
				for _, ts := range pc.TransferSyntaxes {
					addItem(b, ItemTransferSyntax, addString(ts))
				}
				addRaw(b, pc.Extra)
			})
		}
	}
	if f.pcAC != nil {
		for _, pc := range *f.pcAC {
			addItem(b, ItemPresentationContextAC, func(b *cryptobyte.Builder) {
				b.AddBytes([]byte{pc.ID, 0, uint8(pc.Result), 0})
				// Always present, even empty on a rejection: PS3.8 requires
				// the sub-item, and the acceptor does not test its value.
				addItem(b, ItemTransferSyntax, addString(pc.TransferSyntax))
				addRaw(b, pc.Extra)
			})
		}
	}
	addRaw(b, *f.extra)
	addItem(b, ItemUserInfo, func(b *cryptobyte.Builder) { encodeUserInfo(b, f.ui) })
}

func bool8(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}

func encodeUserInfo(b *cryptobyte.Builder, ui *UserInfo) {
	if ui.HasMaxLength {
		addItem(b, ItemMaxLength, func(b *cryptobyte.Builder) { b.AddUint32(ui.MaxLength) })
	}
	if ui.ImplementationClassUID != "" {
		addItem(b, ItemImplementationClassUID, addString(ui.ImplementationClassUID))
	}
	if w := ui.AsyncOps; w != nil {
		addItem(b, ItemAsyncOpsWindow, func(b *cryptobyte.Builder) { b.AddUint16(w.MaxInvoked); b.AddUint16(w.MaxPerformed) })
	}
	for _, r := range ui.RoleSelections {
		addItem(b, ItemRoleSelection, func(b *cryptobyte.Builder) {
			addUID16(b, r.SOPClassUID)
			b.AddUint8(bool8(r.SCU))
			b.AddUint8(bool8(r.SCP))
		})
	}
	if ui.ImplementationVersionName != "" {
		addItem(b, ItemImplementationVersionName, addString(ui.ImplementationVersionName))
	}
	for _, e := range ui.ExtendedNegotiations {
		addItem(b, ItemExtendedNegotiation, func(b *cryptobyte.Builder) {
			addUID16(b, e.SOPClassUID)
			b.AddBytes(e.Info)
		})
	}
	for _, c := range ui.CommonExtendedNegotiations {
		addItem(b, ItemCommonExtendedNegotiation, func(b *cryptobyte.Builder) {
			addUID16(b, c.SOPClassUID)
			addUID16(b, c.ServiceClassUID)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, uid := range c.RelatedGeneralSOPClasses {
					addUID16(b, uid)
				}
			})
		})
	}
	if u := ui.UserIdentityRQ; u != nil {
		addItem(b, ItemUserIdentityRQ, func(b *cryptobyte.Builder) {
			b.AddUint8(uint8(u.Type))
			b.AddUint8(bool8(u.PositiveResponseRequested))
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(u.Primary) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(u.Secondary) })
		})
	}
	if u := ui.UserIdentityAC; u != nil {
		addItem(b, ItemUserIdentityAC, func(b *cryptobyte.Builder) {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(u.ServerResponse) })
		})
	}
	addRaw(b, ui.Extra)
}
