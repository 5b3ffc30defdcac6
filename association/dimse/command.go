package dimse

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/dicomedge/dicomedge/association"
)

// Element is one raw command-set element: Tag is group<<16|element.
type Element struct {
	Tag   uint32
	Value []byte
}

// Command is a DIMSE command set (PS3.7 E.1). Typed fields hold the elements
// the edge acts on; Elements holds every element decoded, in order, so that
// ones without a typed field are re-encoded unchanged.
type Command struct {
	CommandField              CommandField
	MessageID                 uint16
	MessageIDBeingRespondedTo uint16
	AffectedSOPClassUID       string
	AffectedSOPInstanceUID    string
	RequestedSOPClassUID      string
	RequestedSOPInstanceUID   string
	MoveDestination           string
	Priority                  uint16
	CommandDataSetType        uint16
	Status                    uint16
	HasStatus                 bool
	// Sub-operation counts (C-MOVE/C-GET responses); nil when absent.
	NumberOfRemainingSuboperations *uint16
	NumberOfCompletedSuboperations *uint16
	NumberOfFailedSuboperations    *uint16
	NumberOfWarningSuboperations   *uint16
	MoveOriginatorAET              string
	MoveOriginatorMessageID        uint16
	ErrorComment                   string
	Elements                       []Element
}

// Uint16 returns a pointer to v, for the optional count fields.
func Uint16(v uint16) *uint16 { return &v }

// HasDataSet reports whether a data set follows the command (PS3.7 E.1:
// any CommandDataSetType other than 0x0101).
func (c *Command) HasDataSet() bool { return c.CommandDataSetType != NoDataSet }

// SOPClassUID is the affected SOP class, or the requested one for N-services
// that name it that way.
func (c *Command) SOPClassUID() string {
	if c.AffectedSOPClassUID != "" {
		return c.AffectedSOPClassUID
	}
	return c.RequestedSOPClassUID
}

// SOPInstanceUID is the affected SOP instance, or the requested one.
func (c *Command) SOPInstanceUID() string {
	if c.AffectedSOPInstanceUID != "" {
		return c.AffectedSOPInstanceUID
	}
	return c.RequestedSOPInstanceUID
}

func invalid(format string, args ...any) error {
	return &association.ProtocolError{Reason: association.AbortInvalidPDUParameterValue, Msg: "DIMSE command: " + fmt.Sprintf(format, args...)}
}

// DecodeCommand parses a command set in Implicit VR Little Endian. It reads
// elements to the end of b rather than trusting CommandGroupLength, refuses
// elements outside group 0000 or running past b, and requires a
// CommandField. Strings are trimmed of their padding.
//
// Tags must be strictly ascending (PS3.5 7.1: elements in increasing tag
// order, each at most once), and a CommandGroupLength, when present, must
// count exactly the bytes after it. The relay forwards the original bytes
// while policy reads the decoded fields, so any command a peer could read
// differently (first of two MoveDestinations rather than the last, say) is
// refused rather than interpreted.
func DecodeCommand(b []byte) (*Command, error) {
	c := &Command{}
	n := 0
	for rest := b; len(rest) > 0; n++ {
		if len(rest) < 8 {
			return nil, invalid("truncated element header at offset %d", len(b)-len(rest))
		}
		l := binary.LittleEndian.Uint32(rest[4:8])
		if uint64(l) > uint64(len(rest)-8) {
			return nil, invalid("element length %d overruns the command (%d bytes left)", l, len(rest)-8)
		}
		rest = rest[8+l:]
	}
	c.Elements = make([]Element, 0, n)
	hasField := false
	for i := 0; len(b) > 0; i++ {
		group := binary.LittleEndian.Uint16(b[0:2])
		elem := binary.LittleEndian.Uint16(b[2:4])
		l := binary.LittleEndian.Uint32(b[4:8])
		v := b[8 : 8+l : 8+l]
		b = b[8+l:]
		if group != 0 {
			return nil, invalid("element (%04x,%04x) outside group 0000", group, elem)
		}
		tag := uint32(elem)
		if i > 0 && tag <= c.Elements[i-1].Tag {
			return nil, invalid("element (0000,%04x) after (0000,%04x): tags repeated or out of order", elem, c.Elements[i-1].Tag)
		}
		if tag == TagCommandGroupLength {
			if len(v) != 4 {
				return nil, invalid("CommandGroupLength has length %d, want 4", len(v))
			}
			if g := binary.LittleEndian.Uint32(v); uint64(g) != uint64(len(b)) {
				return nil, invalid("CommandGroupLength %d, but %d bytes follow it", g, len(b))
			}
		}
		c.Elements = append(c.Elements, Element{Tag: tag, Value: slices.Clone(v)})
		var err error
		switch tag {
		case TagCommandField:
			var f uint16
			f, err = us(tag, v)
			c.CommandField, hasField = CommandField(f), true
		case TagMessageID:
			c.MessageID, err = us(tag, v)
		case TagMessageIDBeingRespondedTo:
			c.MessageIDBeingRespondedTo, err = us(tag, v)
		case TagPriority:
			c.Priority, err = us(tag, v)
		case TagCommandDataSetType:
			c.CommandDataSetType, err = us(tag, v)
		case TagStatus:
			c.Status, err = us(tag, v)
			c.HasStatus = true
		case TagMoveOriginatorMessageID:
			c.MoveOriginatorMessageID, err = us(tag, v)
		case TagNumberOfRemainingSuboperations:
			c.NumberOfRemainingSuboperations, err = usPtr(tag, v)
		case TagNumberOfCompletedSuboperations:
			c.NumberOfCompletedSuboperations, err = usPtr(tag, v)
		case TagNumberOfFailedSuboperations:
			c.NumberOfFailedSuboperations, err = usPtr(tag, v)
		case TagNumberOfWarningSuboperations:
			c.NumberOfWarningSuboperations, err = usPtr(tag, v)
		case TagAffectedSOPClassUID:
			c.AffectedSOPClassUID = uid(v)
		case TagRequestedSOPClassUID:
			c.RequestedSOPClassUID = uid(v)
		case TagAffectedSOPInstanceUID:
			c.AffectedSOPInstanceUID = uid(v)
		case TagRequestedSOPInstanceUID:
			c.RequestedSOPInstanceUID = uid(v)
		case TagMoveDestination:
			c.MoveDestination = text(v)
		case TagMoveOriginatorApplicationEntityTitle:
			c.MoveOriginatorAET = text(v)
		case TagErrorComment:
			c.ErrorComment = text(v)
		}
		if err != nil {
			return nil, err
		}
	}
	if !hasField {
		return nil, invalid("no CommandField (0000,0100)")
	}
	return c, nil
}

func us(tag uint32, v []byte) (uint16, error) {
	if len(v) != 2 {
		return 0, invalid("(0000,%04x) has length %d, want 2", tag, len(v))
	}
	return binary.LittleEndian.Uint16(v), nil
}

func usPtr(tag uint32, v []byte) (*uint16, error) {
	x, err := us(tag, v)
	if err != nil {
		return nil, err
	}
	return &x, nil
}

func uid(v []byte) string  { return strings.TrimRight(string(v), "\x00 ") }
func text(v []byte) string { return strings.Trim(string(v), " \x00") }

// typedTags are the elements Encode writes from typed fields; copies of them
// in Elements are ignored.
var typedTags = map[uint32]bool{
	TagCommandGroupLength: true, TagAffectedSOPClassUID: true, TagRequestedSOPClassUID: true, TagCommandField: true,
	TagMessageID: true, TagMessageIDBeingRespondedTo: true, TagMoveDestination: true, TagPriority: true,
	TagCommandDataSetType: true, TagStatus: true, TagErrorComment: true, TagAffectedSOPInstanceUID: true,
	TagRequestedSOPInstanceUID: true, TagNumberOfRemainingSuboperations: true, TagNumberOfCompletedSuboperations: true,
	TagNumberOfFailedSuboperations: true, TagNumberOfWarningSuboperations: true,
	TagMoveOriginatorApplicationEntityTitle: true, TagMoveOriginatorMessageID: true,
}

func hasPriority(f CommandField) bool {
	return f == CStoreRQ || f == CFindRQ || f == CMoveRQ || f == CGetRQ
}

// Encode returns the command set in Implicit VR Little Endian, elements in
// ascending tag order, with CommandGroupLength computed. Typed fields are
// written when set (MessageID for requests, MessageIDBeingRespondedTo for
// responses and C-CANCEL, Priority for C-STORE/FIND/MOVE/GET requests, even
// when zero); other elements come from Elements.
func (c *Command) Encode() []byte {
	els := make([]Element, 0, 12+len(c.Elements))
	add16 := func(tag uint32, v uint16) {
		els = append(els, Element{tag, binary.LittleEndian.AppendUint16(nil, v)})
	}
	addStr := func(tag uint32, s string, pad byte) {
		if s == "" {
			return
		}
		v := []byte(s)
		if len(v)%2 == 1 {
			v = append(v, pad)
		}
		els = append(els, Element{tag, v})
	}
	f := c.CommandField
	addStr(TagAffectedSOPClassUID, c.AffectedSOPClassUID, 0)
	addStr(TagRequestedSOPClassUID, c.RequestedSOPClassUID, 0)
	add16(TagCommandField, uint16(f))
	if (f.IsRequest() && f != CCancelRQ) || c.MessageID != 0 {
		add16(TagMessageID, c.MessageID)
	}
	if !f.IsRequest() || f == CCancelRQ || c.MessageIDBeingRespondedTo != 0 {
		add16(TagMessageIDBeingRespondedTo, c.MessageIDBeingRespondedTo)
	}
	addStr(TagMoveDestination, c.MoveDestination, ' ')
	if hasPriority(f) || c.Priority != 0 {
		add16(TagPriority, c.Priority)
	}
	add16(TagCommandDataSetType, c.CommandDataSetType)
	if c.HasStatus {
		add16(TagStatus, c.Status)
	}
	addStr(TagErrorComment, c.ErrorComment, ' ')
	addStr(TagAffectedSOPInstanceUID, c.AffectedSOPInstanceUID, 0)
	addStr(TagRequestedSOPInstanceUID, c.RequestedSOPInstanceUID, 0)
	for _, p := range []struct {
		tag uint32
		v   *uint16
	}{
		{TagNumberOfRemainingSuboperations, c.NumberOfRemainingSuboperations},
		{TagNumberOfCompletedSuboperations, c.NumberOfCompletedSuboperations},
		{TagNumberOfFailedSuboperations, c.NumberOfFailedSuboperations},
		{TagNumberOfWarningSuboperations, c.NumberOfWarningSuboperations},
	} {
		if p.v != nil {
			add16(p.tag, *p.v)
		}
	}
	addStr(TagMoveOriginatorApplicationEntityTitle, c.MoveOriginatorAET, ' ')
	if c.MoveOriginatorAET != "" || c.MoveOriginatorMessageID != 0 {
		add16(TagMoveOriginatorMessageID, c.MoveOriginatorMessageID)
	}
	for _, e := range c.Elements {
		if !typedTags[e.Tag] && e.Tag>>16 == 0 {
			els = append(els, e)
		}
	}
	slices.SortStableFunc(els, func(a, b Element) int { return cmp.Compare(a.Tag, b.Tag) })

	size := 0
	for _, e := range els {
		size += 8 + len(e.Value)
	}
	out := make([]byte, 0, 12+size)
	out = appendElement(out, TagCommandGroupLength, binary.LittleEndian.AppendUint32(nil, uint32(size)))
	for _, e := range els {
		out = appendElement(out, e.Tag, e.Value)
	}
	return out
}

func appendElement(dst []byte, tag uint32, v []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag>>16))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// NewResponse builds the response to rq with the given status: the
// response command field, MessageIDBeingRespondedTo, the affected SOP class
// and instance, and no data set.
func NewResponse(rq *Command, status uint16) *Command {
	return &Command{
		CommandField:              rq.CommandField.Response(),
		MessageIDBeingRespondedTo: rq.MessageID,
		AffectedSOPClassUID:       rq.SOPClassUID(),
		AffectedSOPInstanceUID:    rq.AffectedSOPInstanceUID,
		CommandDataSetType:        NoDataSet,
		Status:                    status,
		HasStatus:                 true,
	}
}

// VerificationResponse is the C-ECHO-RSP a Verification SCP sends for rq
// (PS3.4 A.4, PS3.7 9.3.5.2): success, no data set.
func VerificationResponse(rq *Command) *Command {
	rsp := NewResponse(rq, StatusSuccess)
	if rsp.AffectedSOPClassUID == "" {
		rsp.AffectedSOPClassUID = association.VerificationSOPClass
	}
	rsp.AffectedSOPInstanceUID = ""
	return rsp
}
