package association

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
)

// Hand-built wire bytes, written independently of the encoder so tests
// compare the codec against PS3.8's layouts rather than against itself.

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
func u32(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// item is type, reserved (0), 2-byte length, body.
func item(typ byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{typ, 0}, u16(len(b)), b)
}

// pdu is type, reserved, 4-byte length, body.
func pdu(typ byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{typ, 0}, u32(len(b)), b)
}

func ae(s string) []byte {
	b := []byte(s)
	for len(b) < 16 {
		b = append(b, ' ')
	}
	return b
}

// assocFixed is the 68-byte fixed part of A-ASSOCIATE-RQ/AC.
func assocFixed(called, calling string) []byte {
	return cat(u16(1), u16(0), ae(called), ae(calling), make([]byte, 32))
}

func str(s string) []byte { return []byte(s) }

func lp16(s string) []byte { return cat(u16(len(s)), []byte(s)) }

func mustEqual(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}
