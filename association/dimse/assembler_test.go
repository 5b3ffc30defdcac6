package dimse

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

func TestAssembler(t *testing.T) {
	cmd := (&Command{CommandField: CStoreRQ, MessageID: 1, AffectedSOPClassUID: association.CTImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4.5.6.7.8.9", CommandDataSetType: DataSetPresent}).Encode()
	frag := func(ctx uint8, command, last bool, data []byte) association.PDV {
		return association.PDV{ContextID: ctx, Command: command, Last: last, Data: data}
	}
	type step struct {
		pdv  association.PDV
		done bool
		err  AbortWant
	}
	cases := []struct {
		name  string
		max   int
		steps []step
	}{
		{"one fragment", 0, []step{{pdv: frag(1, true, true, cmd), done: true}}},
		{"three fragments, then data passed through", 0, []step{
			{pdv: frag(1, true, false, cmd[:10])},
			{pdv: frag(1, true, false, cmd[10:11])},
			{pdv: frag(1, true, true, cmd[11:]), done: true},
			{pdv: frag(1, false, false, []byte("pixels"))},
			{pdv: frag(1, false, true, []byte("more"))},
		}},
		{"empty first fragment", 0, []step{{pdv: frag(1, true, false, nil)}, {pdv: frag(1, true, true, cmd), done: true}}},
		{"data before the last command fragment", 0, []step{
			{pdv: frag(1, true, false, cmd[:10])},
			{pdv: frag(1, false, true, []byte("x")), err: AbortWant{true, association.AbortUnexpectedPDUParameter}},
		}},
		{"fragments switch context", 0, []step{
			{pdv: frag(1, true, false, cmd[:10])},
			{pdv: frag(3, true, true, cmd[10:]), err: AbortWant{true, association.AbortUnexpectedPDUParameter}},
		}},
		{"over the size bound (PDV headers counted)", 70, []step{
			{pdv: frag(1, true, false, cmd[:60])},
			{pdv: frag(1, true, true, cmd[60:]), err: AbortWant{true, association.AbortInvalidPDUParameterValue}},
		}},
		{"single fragment over the bound", 16, []step{{pdv: frag(1, true, true, cmd), err: AbortWant{true, association.AbortInvalidPDUParameterValue}}}},
		{"malformed command", 0, []step{{pdv: frag(1, true, true, cmd[:7]), err: AbortWant{true, association.AbortInvalidPDUParameterValue}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &Assembler{MaxCommandSize: tc.max}
			for i, s := range tc.steps {
				got, done, err := a.Add(s.pdv)
				if s.err.want {
					var pe *association.ProtocolError
					if !errors.As(err, &pe) || pe.Reason != s.err.reason {
						t.Fatalf("step %d: err %v, want reason %v", i, err, s.err.reason)
					}
					if a.Pending() {
						t.Fatalf("step %d: still pending after an error", i)
					}
					return
				}
				if err != nil || done != s.done {
					t.Fatalf("step %d: done %v err %v", i, done, err)
				}
				if done && (got == nil || got.AffectedSOPInstanceUID != "1.2.3.4.5.6.7.8.9" || !bytes.Equal(got.Encode(), cmd)) {
					t.Fatalf("step %d: assembled %+v", i, got)
				}
				if !done && got != nil {
					t.Fatalf("step %d: command before the last fragment", i)
				}
			}
		})
	}
}

type AbortWant struct {
	want   bool
	reason association.AbortReason
}

// The assembler's buffer is reused: assembling many multi-fragment commands
// does not allocate beyond the decoded commands.
func TestAssemblerReusesBuffer(t *testing.T) {
	cmd := (&Command{CommandField: CEchoRQ, MessageID: 1, CommandDataSetType: NoDataSet}).Encode()
	var a Assembler
	_, _, _ = a.Add(association.PDV{ContextID: 1, Command: true, Data: cmd[:5]})
	_, _, _ = a.Add(association.PDV{ContextID: 1, Command: true, Last: true, Data: cmd[5:]})
	c := cap(a.buf)
	for range 10 {
		_, _, _ = a.Add(association.PDV{ContextID: 1, Command: true, Data: cmd[:5]})
		if _, done, err := a.Add(association.PDV{ContextID: 1, Command: true, Last: true, Data: cmd[5:]}); !done || err != nil {
			t.Fatal(done, err)
		}
	}
	if cap(a.buf) != c {
		t.Fatalf("buffer reallocated: cap %d -> %d", c, cap(a.buf))
	}
}

func TestWriteMessageFragments(t *testing.T) {
	cmd := &Command{CommandField: CStoreRQ, MessageID: 1, AffectedSOPClassUID: association.CTImageStorage,
		AffectedSOPInstanceUID: "1.2.3", CommandDataSetType: DataSetPresent}
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i)
	}
	cases := []struct {
		name       string
		maxPDU     uint32
		dataset    []byte
		wantDataPD int
	}{
		{"16 KiB PDUs, data in one", 16384, data, 1},
		{"1 KiB PDUs", 1024, data, 10}, // 1018 data bytes per PDV
		{"tiny PDUs split the command too", 40, data[:100], 3},
		{"unlimited", 0, data, 1},
		{"no data set", 16384, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w countingWriter
			if err := WriteMessage(&w, 5, cmd, tc.dataset, tc.maxPDU); err != nil {
				t.Fatal(err)
			}
			r := association.NewReader(bytes.NewReader(w.buf.Bytes()), 0)
			var a Assembler
			var got *Command
			var gotData []byte
			pdus, dataPDUs := 0, 0
			for {
				typ, raw, err := r.Next()
				if err != nil {
					break
				}
				pdus++
				if typ != association.TypePDataTF || (tc.maxPDU != 0 && len(raw)-association.HeaderLen > int(tc.maxPDU)) {
					t.Fatalf("PDU %d: %v of %d bytes over max %d", pdus, typ, len(raw), tc.maxPDU)
				}
				err = association.EachPDV(raw[association.HeaderLen:], func(v association.PDV) error {
					if v.ContextID != 5 {
						t.Fatalf("context %d", v.ContextID)
					}
					c, done, err := a.Add(v)
					if done {
						got = c
					}
					if !v.Command {
						dataPDUs++
						gotData = append(gotData, v.Data...)
						if v.Last != (len(gotData) == len(tc.dataset)) {
							t.Fatalf("last bit %v at %d of %d bytes", v.Last, len(gotData), len(tc.dataset))
						}
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if w.calls != pdus {
				t.Fatalf("%d writes for %d PDUs", w.calls, pdus)
			}
			if got == nil || got.AffectedSOPInstanceUID != "1.2.3" || !bytes.Equal(gotData, tc.dataset) || dataPDUs != tc.wantDataPD {
				t.Fatalf("command %+v, %d data bytes in %d PDUs", got, len(gotData), dataPDUs)
			}
		})
	}
	if err := WriteMessage(&countingWriter{}, 1, cmd, nil, 6); err == nil {
		t.Fatal("max PDU 6 accepted")
	}
}

type countingWriter struct {
	buf   bytes.Buffer
	calls int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.calls++; return w.buf.Write(p) }

// Fragments with no data still count against the bound: their PDV item
// headers, and their number.
func TestAssemblerCountsEmptyFragments(t *testing.T) {
	a := &Assembler{}
	var err error
	n := 0
	for ; n < 10*MaxCommandFragments && err == nil; n++ {
		_, _, err = a.Add(association.PDV{ContextID: 1, Command: true})
	}
	if err == nil || n != MaxCommandFragments+1 {
		t.Fatalf("after %d empty fragments: %v", n, err)
	}
	// Many one-fragment commands in a row do not add up.
	cmd := (&Command{CommandField: CEchoRQ, MessageID: 1, CommandDataSetType: NoDataSet}).Encode()
	a = &Assembler{MaxCommandSize: len(cmd) + 6}
	for i := range 1000 {
		if _, done, err := a.Add(association.PDV{ContextID: 1, Command: true, Last: true, Data: cmd}); !done || err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	// Header bytes count: a command of exactly the bound's data does not fit.
	a = &Assembler{MaxCommandSize: len(cmd)}
	if _, _, err := a.Add(association.PDV{ContextID: 1, Command: true, Last: true, Data: cmd}); err == nil {
		t.Fatal("a command of MaxCommandSize data bytes fitted with its header")
	}
}
