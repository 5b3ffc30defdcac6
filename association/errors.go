package association

import (
	"errors"
	"fmt"
)

// ProtocolError is malformed or unexpected input from the peer. Its Reason is
// the A-ABORT reason (source 2, service provider) the peer should receive.
type ProtocolError struct {
	Reason AbortReason
	Msg    string
}

func (e *ProtocolError) Error() string {
	return "dicom upper layer: " + e.Reason.String() + ": " + e.Msg
}

func protoErr(reason AbortReason, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Unexpected returns the error for a PDU that is valid but not allowed in the
// current state (PS3.8 9.2 state machine), e.g. a P-DATA-TF before the AC.
func Unexpected(t PDUType) *ProtocolError {
	return protoErr(AbortUnexpectedPDU, "%v not expected here", t)
}

// AbortFor returns the A-ABORT to send for err: a *ProtocolError gives source
// 2 with its reason; any other error (I/O, limits of our own) gives source 2
// reason-not-specified. It returns nil for a nil error.
func AbortFor(err error) *Abort {
	if err == nil {
		return nil
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return &Abort{Source: AbortSourceServiceProvider, Reason: pe.Reason}
	}
	return &Abort{Source: AbortSourceServiceProvider, Reason: AbortReasonNotSpecified}
}
