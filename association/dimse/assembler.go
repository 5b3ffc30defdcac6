package dimse

import (
	"github.com/dicomedge/dicomedge/association"
)

// DefaultMaxCommandSize bounds an assembled command set when
// Assembler.MaxCommandSize is 0, counted as it came on the wire: each
// fragment's data and its 6-byte PDV item header, so that fragments with no
// data use the bound up too. Real command sets are a few hundred bytes.
const DefaultMaxCommandSize = 64 << 10

// MaxCommandFragments bounds the PDVs one command set may span.
const MaxCommandFragments = 128

// pdvHeaderLen is a PDV item's length, context ID and control header
// (PS3.8 9.3.5.1).
const pdvHeaderLen = 6

// Assembler collects the command fragments of one DIMSE message, which may
// span several PDVs and PDUs (PS3.8 E.2). Data-set PDVs are never
// accumulated: the caller streams them on.
type Assembler struct {
	MaxCommandSize int

	buf     []byte
	wire    int // bytes the fragments so far took on the wire
	frags   int
	ctx     uint8
	pending bool
}

// Pending reports whether a command is partly assembled.
func (a *Assembler) Pending() bool { return a.pending }

// Reset drops any partly assembled command.
func (a *Assembler) Reset() { a.buf, a.pending, a.wire, a.frags = a.buf[:0], false, 0, 0 }

// Add feeds one PDV. For a command fragment it returns the decoded command
// and done=true on the last fragment. A data PDV returns (nil, false, nil)
// for the caller to pass on, unless a command is half assembled, which is a
// protocol error, as are fragments switching presentation context and a
// command over MaxCommandSize.
func (a *Assembler) Add(p association.PDV) (cmd *Command, done bool, err error) {
	if !p.Command {
		if a.pending {
			a.Reset()
			return nil, false, &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter,
				Msg: "data-set PDV before the command's last fragment"}
		}
		return nil, false, nil
	}
	if a.pending && p.ContextID != a.ctx {
		a.Reset()
		return nil, false, &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter,
			Msg: "command fragments on different presentation contexts"}
	}
	limit := a.MaxCommandSize
	if limit <= 0 {
		limit = DefaultMaxCommandSize
	}
	a.wire += pdvHeaderLen + len(p.Data)
	a.frags++
	if a.wire > limit || a.frags > MaxCommandFragments {
		a.Reset()
		return nil, false, &association.ProtocolError{Reason: association.AbortInvalidPDUParameterValue,
			Msg: "DIMSE command set exceeds the size limit"}
	}
	if !a.pending && p.Last {
		// The common case, one fragment: decode in place without copying.
		a.wire, a.frags = 0, 0
		cmd, err := DecodeCommand(p.Data)
		return cmd, err == nil, err
	}
	a.ctx, a.pending = p.ContextID, true
	a.buf = append(a.buf, p.Data...)
	if !p.Last {
		return nil, false, nil
	}
	cmd, err = DecodeCommand(a.buf)
	a.Reset()
	return cmd, err == nil, err
}
