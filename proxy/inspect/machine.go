package inspect

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// State is where one side's stream of DIMSE messages stands (PS3.7 6.3.1:
// a message is its command set, then, when the command announces one, its
// data set, both as PDVs on the message's presentation context; PS3.8
// Annex E).
type State uint8

const (
	// AwaitCommand: between messages; only a command PDV may come.
	AwaitCommand State = iota
	// InCommand: command fragments are held until the last one, judged
	// only when the command set is whole.
	InCommand
	// InDataSet: the data set of a forwarded message is passing.
	InDataSet
	// DiscardDataSet: the data set of a refused request is swallowed.
	DiscardDataSet
)

var stateNames = [...]string{"await-command", "in-command", "in-data-set", "discard-data-set"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state-%d", s)
}

// Event is what one PDV is, by its message control header (PS3.8 E.2).
type Event uint8

const (
	CommandFragment Event = iota // command, not the last fragment
	CommandLast                  // command, last fragment
	DataFragment                 // data set, not the last fragment
	DataLast                     // data set, last fragment
)

func eventOf(p association.PDV) Event {
	e := DataFragment
	if p.Command {
		e = CommandFragment
	}
	if p.Last {
		e++
	}
	return e
}

// action handles one PDV in a state; it sets the next state or returns
// the violation that ends the association.
type action func(in *Inspector, st *stream, p association.PDV) *Violation

// transitions is the whole DIMSE message state machine of one side:
// (state, event) → action.
var transitions = [...][4]action{
	//               CommandFragment   CommandLast       DataFragment   DataLast
	AwaitCommand:   {holdFragment, judgeCommand, noCommand, noCommand},
	InCommand:      {holdFragment, judgeCommand, dataInCommand, dataInCommand},
	InDataSet:      {commandInDataSet, commandInDataSet, forwardData, forwardData},
	DiscardDataSet: {commandInDataSet, commandInDataSet, discardData, discardData},
}

// stream is one side's state: the message in progress and the buffers of
// the verdict being built for its current PDU.
type stream struct {
	side  Side
	state State

	ctx    uint8      // the message in progress's presentation context
	held   *[]byte    // command fragments' data (InCommand), from heldPool
	wire   int        // bytes the held fragments took on the wire, PDV headers included
	frags  int        // held fragments
	op     *op        // the request whose data set is passing (InDataSet), or nil
	filter DataFilter // rewrites the passing data set, or nil
	deid   *deidOp    // de-identifies the passing data set, or nil

	// The verdict for the PDU being judged.
	in      []byte // the PDU
	changed bool   // not forwarded as it came
	kept    int    // PDVs forwarded unchanged before the first change
	fwd     builder
	reply   builder
	records []Record
	notes   []Note
	scratch []byte // a DataFilter's output
	added   []*op  // requests this PDU entered in the ledger: not sent if it breaks the protocol
	refused int    // requests this PDU refused: their answers are in reply
}

// heldPool holds command buffers of MaxCommandBytes: taken when a command
// arrives in fragments, given back once it is judged, so holding never
// grows a slice whatever the fragment count.
var heldPool = sync.Pool{New: func() any { b := make([]byte, 0, MaxCommandBytes); return &b }}

func (st *stream) begin(pdu []byte) {
	st.in, st.changed, st.kept, st.refused = pdu, false, 0, 0
	st.fwd.reset()
	st.reply.reset()
	clear(st.records)
	st.records = st.records[:0]
	clear(st.notes)
	st.notes = st.notes[:0]
	clear(st.added)
	st.added = st.added[:0]
}

func (st *stream) verdict() Verdict {
	v := Verdict{Pass: !st.changed, Records: st.records, Notes: st.notes}
	if st.changed {
		v.Forward = st.fwd.bytes()
	}
	if len(st.reply.buf) > 0 {
		v.Reply = st.reply.bytes()
	}
	return v
}

// keep forwards p as it came (cut to the other side's maximum length).
func (st *stream) keep(p association.PDV) {
	if !st.changed {
		st.kept++
		return
	}
	st.fwd.fit(p.ContextID, p.MessageControlHeader(), p.Data)
}

// change marks the PDU as not forwarded as it came: the PDVs kept so far
// are copied into the PDUs built instead.
func (st *stream) change() {
	if st.changed {
		return
	}
	st.changed = true
	n := st.kept
	_ = association.EachPDV(st.in[association.HeaderLen:], func(p association.PDV) error {
		if n == 0 {
			return errStop
		}
		n--
		st.fwd.fit(p.ContextID, p.MessageControlHeader(), p.Data)
		return nil
	})
}

var errStop = errors.New("stop")

func (st *stream) dropHeld() {
	if st.held != nil {
		*st.held = (*st.held)[:0]
		heldPool.Put(st.held)
		st.held = nil
	}
	st.wire, st.frags = 0, 0
}

func (st *stream) release() {
	if st.deid == nil {
		// While a data set is being de-identified every PDU is rebuilt: its
		// buffer is kept until the data set ends.
		st.fwd.release()
	}
	st.reply.release()
	if cap(st.scratch) > 4<<10 {
		st.scratch = nil
	}
	st.in = nil
}

func violation(st *stream, reason association.AbortReason, format string, args ...any) *Violation {
	return &Violation{From: st.side, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// pdv runs one PDV through the state machine.
func (in *Inspector) pdv(st *stream, p association.PDV) *Violation {
	if in.context(p.ContextID) == nil {
		return violation(st, association.AbortInvalidPDUParameterValue,
			"PDV on presentation context %d, which was not accepted", p.ContextID)
	}
	return transitions[st.state][eventOf(p)](in, st, p)
}

// hold counts a command fragment against the bounds and copies its data
// into the held buffer.
func (st *stream) hold(p association.PDV) *Violation {
	if st.state == InCommand && p.ContextID != st.ctx {
		return violation(st, association.AbortUnexpectedPDUParameter,
			"command fragments on presentation contexts %d and %d", st.ctx, p.ContextID)
	}
	st.frags++
	st.wire += pdvHeaderLen + len(p.Data)
	if st.frags > MaxCommandFragments || st.wire > MaxCommandBytes {
		return violation(st, association.AbortInvalidPDUParameterValue,
			"DIMSE command set over %d bytes or %d fragments", MaxCommandBytes, MaxCommandFragments)
	}
	if st.held == nil {
		st.held = heldPool.Get().(*[]byte)
	}
	*st.held = append(*st.held, p.Data...) // within its capacity: wire bounds it
	st.ctx = p.ContextID
	return nil
}

func holdFragment(_ *Inspector, st *stream, p association.PDV) *Violation {
	if v := st.hold(p); v != nil {
		return v
	}
	st.state = InCommand
	st.change() // not forwarded before the whole command is judged
	return nil
}

// judgeCommand completes a command set and decides on its message.
func judgeCommand(in *Inspector, st *stream, p association.PDV) *Violation {
	fragmented := st.state == InCommand
	data := p.Data
	if fragmented {
		if v := st.hold(p); v != nil {
			return v
		}
		data = *st.held
	}
	cmd, err := dimse.DecodeCommand(data)
	if err != nil {
		reason := association.AbortInvalidPDUParameterValue
		var pe *association.ProtocolError
		if errors.As(err, &pe) {
			reason = pe.Reason
		}
		return violation(st, reason, "%v", err)
	}
	ctx := in.context(p.ContextID)
	d, v := in.decide(st, ctx, cmd)
	if v != nil {
		return v
	}
	switch {
	case d.command != nil:
		st.change()
		st.fwd.command(ctx.ID, d.command)
	case d.forward && fragmented:
		st.change()
		st.fwd.command(ctx.ID, data)
	case d.forward:
		st.keep(p)
	default:
		st.change()
	}
	st.dropHeld()
	st.state, st.ctx, st.op, st.filter, st.deid = d.next, ctx.ID, d.op, d.filter, d.deid
	return nil
}

func noCommand(_ *Inspector, st *stream, p association.PDV) *Violation {
	return violation(st, association.AbortUnexpectedPDUParameter,
		"data set PDV on presentation context %d with no command announcing one", p.ContextID)
}

func dataInCommand(_ *Inspector, st *stream, _ association.PDV) *Violation {
	return violation(st, association.AbortUnexpectedPDUParameter, "data set PDV before the command's last fragment")
}

func commandInDataSet(_ *Inspector, st *stream, _ association.PDV) *Violation {
	return violation(st, association.AbortUnexpectedPDUParameter,
		"command PDV before the last fragment of the data set in progress")
}

func (st *stream) sameContext(p association.PDV) *Violation {
	if p.ContextID != st.ctx {
		return violation(st, association.AbortUnexpectedPDUParameter,
			"data set PDV on presentation context %d; its command came on %d", p.ContextID, st.ctx)
	}
	return nil
}

func forwardData(in *Inspector, st *stream, p association.PDV) *Violation {
	if v := st.sameContext(p); v != nil {
		return v
	}
	if op := st.op; op != nil {
		op.rec.Bytes += int64(len(p.Data))
		if op.scanner != nil && !op.scanner.Done() {
			op.scanner.Feed(p.Data)
			if v := in.checkOrder(st, op); v != nil {
				return v
			}
		}
	}
	if st.deid != nil {
		if v := in.deidData(st, p); v != nil || st.deid == nil {
			return v // a violation, or the instance was refused
		}
	} else if st.filter != nil {
		st.scratch = st.filter.Filter(st.scratch[:0], p.Data, p.Last)
		st.change()
		if len(st.scratch) > 0 || p.Last {
			st.fwd.data(p.ContextID, st.scratch, p.Last)
		}
	} else {
		st.keep(p)
	}
	if p.Last {
		if op := st.op; op != nil {
			in.ledger.dataDone(st, op, in.cfg.Now())
		}
		st.state, st.op, st.filter, st.deid = AwaitCommand, nil, nil, nil
	}
	return nil
}

func discardData(_ *Inspector, st *stream, p association.PDV) *Violation {
	if v := st.sameContext(p); v != nil {
		return v
	}
	st.change()
	if p.Last {
		st.state = AwaitCommand
	}
	return nil
}

// builder appends whole P-DATA-TF PDUs of at most max bytes (after the
// 6-byte PDU header, as PS3.8 counts the maximum length).
type builder struct {
	buf   []byte
	start int
	open  bool
	max   uint32
}

func (b *builder) reset() { b.buf, b.open = b.buf[:0], false }

func (b *builder) release() {
	if cap(b.buf) > 4<<10 { // an idle association keeps no large buffer
		if cap(b.buf) <= maxPooledBuild {
			buf := b.buf[:0]
			buildPool.Put(&buf)
		}
		b.buf = nil
	}
	b.open = false
}

// buildPool holds the buffers long PDUs are rebuilt into (cut to the other
// side's maximum length): a sender offered more than its backend takes
// has every data-set PDU rebuilt.
var buildPool sync.Pool

// maxPooledBuild: larger buffers are not kept.
const maxPooledBuild = 2 << 20

// grow makes room for n more bytes, from the pool when the buffer is new.
func (b *builder) grow(n int) {
	if cap(b.buf)-len(b.buf) >= n {
		return
	}
	if len(b.buf) == 0 {
		if p, ok := buildPool.Get().(*[]byte); ok && cap(*p) >= n {
			b.buf = (*p)[:0]
			return
		}
	}
	b.buf = slices.Grow(b.buf, n)
}

func (b *builder) pdv(ctx, mch uint8, data []byte) {
	need := pdvHeaderLen + len(data)
	if b.open && len(b.buf)-b.start-association.HeaderLen+need > int(b.max) {
		b.close()
	}
	if !b.open {
		b.start, b.open = len(b.buf), true
		b.buf = append(b.buf, byte(association.TypePDataTF), 0, 0, 0, 0, 0)
	}
	n := uint32(len(data) + 2)
	b.buf = append(b.buf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), ctx, mch)
	b.buf = append(b.buf, data...)
}

func (b *builder) close() {
	if !b.open {
		return
	}
	n := uint32(len(b.buf) - b.start - association.HeaderLen)
	b.buf[b.start+2], b.buf[b.start+3], b.buf[b.start+4], b.buf[b.start+5] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	b.open = false
}

func (b *builder) bytes() []byte {
	b.close()
	return b.buf
}

// command appends a whole command set in as few PDVs as max allows.
func (b *builder) command(ctx uint8, data []byte) { b.split(ctx, 1, data, true) }

// data appends one data set fragment (split if a filter made it longer).
func (b *builder) data(ctx uint8, data []byte, last bool) { b.split(ctx, 0, data, last) }

func (b *builder) split(ctx, mch uint8, data []byte, last bool) {
	chunk := int(b.max) - pdvHeaderLen
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), chunk)
		m := mch
		if n == len(data) && last {
			m |= 2
		}
		b.pdv(ctx, m, data[:n])
		data = data[n:]
	}
}

// fit appends one PDV as it came, cut into PDVs that fit max when it does
// not: the same context and kind (command or data set), the last-fragment
// bit on the final piece only (PS3.8 E.2).
func (b *builder) fit(ctx, mch uint8, data []byte) {
	if pdvHeaderLen+len(data) <= int(b.max) {
		b.pdv(ctx, mch, data)
		return
	}
	b.split(ctx, mch&^2, data, mch&2 != 0)
}

// appendWriter lets dimse.WriteMessage encode into a builder's buffer.
type appendWriter struct{ b *builder }

func (w appendWriter) Write(p []byte) (int, error) {
	w.b.buf = append(w.b.buf, p...)
	return len(p), nil
}
