package dimse

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/dicomedge/dicomedge/association"
)

// DefaultFragment is the PDU length WriteMessage uses when the peer set no
// limit (max length 0 means unlimited, but one huge PDU helps nobody).
const DefaultFragment = 64 << 10

// pdvOverhead is what a one-PDV P-DATA-TF adds to its data inside the PDU
// length: the PDV item length (4), context ID (1) and control header (1).
const pdvOverhead = 6

// WriteMessage sends a DIMSE message on contextID: the encoded command, then
// the data set if any, each split into P-DATA-TF PDUs of one PDV whose PDU
// length does not exceed maxPDU (the peer's maximum length; 0 = unlimited).
// Each PDU goes out in one Write.
func WriteMessage(w io.Writer, contextID uint8, cmd *Command, dataset []byte, maxPDU uint32) error {
	if maxPDU == 0 {
		maxPDU = DefaultFragment
	}
	if maxPDU <= pdvOverhead {
		return errors.New("dimse: maximum PDU length too small for a PDV")
	}
	chunk := int(maxPDU) - pdvOverhead
	buf := make([]byte, 0, association.HeaderLen+pdvOverhead+min(chunk, max(len(dataset), 512)))
	send := func(data []byte, command bool) error {
		for first := true; first || len(data) > 0; first = false {
			n := min(len(data), chunk)
			mch := byte(0)
			if command {
				mch |= 1
			}
			if n == len(data) {
				mch |= 2
			}
			buf = append(buf[:0], byte(association.TypePDataTF), 0)
			buf = binary.BigEndian.AppendUint32(buf, uint32(n+pdvOverhead))
			buf = binary.BigEndian.AppendUint32(buf, uint32(n+2))
			buf = append(buf, contextID, mch)
			buf = append(buf, data[:n]...)
			if _, err := w.Write(buf); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
	if err := send(cmd.Encode(), true); err != nil {
		return err
	}
	if len(dataset) == 0 {
		return nil
	}
	return send(dataset, false)
}
