package deid

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// ds builds a data set in either encoding.
type ds struct {
	explicit bool
	b        []byte
}

func (d *ds) el(tag uint32, v vr, val []byte) *ds {
	if len(val)%2 == 1 {
		pad := byte(' ')
		if v == vrUI || !v.text() {
			pad = 0
		}
		val = append(append([]byte{}, val...), pad)
	}
	d.b = appendHeader(d.b, d.explicit, tag, v, uint32(len(val)))
	d.b = append(d.b, val...)
	return d
}

func (d *ds) str(tag uint32, s string) *ds { return d.el(tag, lookupVR(tag), []byte(s)) }

// seq writes a sequence of one item per content, with undefined lengths
// when undefined, else defined.
func (d *ds) seq(tag uint32, undefined bool, items ...[]byte) *ds {
	var body []byte
	for _, it := range items {
		if undefined {
			body = append(body, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF)
			body = append(body, it...)
			body = append(body, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0)
		} else {
			body = append(body, 0xFE, 0xFF, 0x00, 0xE0)
			body = binary.LittleEndian.AppendUint32(body, uint32(len(it)))
			body = append(body, it...)
		}
	}
	if undefined {
		d.b = appendHeader(d.b, d.explicit, tag, vrSQ, undefinedLength)
		d.b = append(d.b, body...)
		d.b = append(d.b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
	} else {
		d.b = appendHeader(d.b, d.explicit, tag, vrSQ, uint32(len(body)))
		d.b = append(d.b, body...)
	}
	return d
}

// parsed is an element of a parsed output: its path of tags from the top.
type parsed struct {
	path  []uint32
	vr    vr
	value []byte
	undef bool
}

type collect struct {
	path []uint32
	out  []parsed
	cur  *parsed
	seqs []uint32
}

func (c *collect) element(w *walker, e *elem) error {
	p := parsed{path: append(append([]uint32{}, c.path...), e.tag), vr: e.vr, undef: e.length == undefinedLength}
	c.out = append(c.out, p)
	c.cur = &c.out[len(c.out)-1]
	if e.length == undefinedLength || e.seq {
		c.seqs = append(c.seqs, e.tag)
		c.cur = nil
	}
	return nil
}
func (c *collect) value(b []byte) error {
	if c.cur != nil {
		c.cur.value = append(c.cur.value, b...)
	}
	return nil
}
func (c *collect) valueEnd() error { c.cur = nil; return nil }
func (c *collect) item(w *walker, e *elem) error {
	if w.top().kind == fSeq {
		c.path = append(c.path, c.seqs[len(c.seqs)-1])
	}
	return nil
}
func (c *collect) itemEnd([]byte) error { c.path = c.path[:len(c.path)-1]; return nil }
func (c *collect) seqEnd([]byte) error  { c.seqs = c.seqs[:len(c.seqs)-1]; return nil }

func parse(t testing.TB, b []byte, explicit bool) []parsed {
	t.Helper()
	c := &collect{}
	w := newWalker(explicit, c)
	if _, err := w.feed(b); err != nil {
		t.Fatalf("output does not parse: %v", err)
	}
	if err := w.finish(); err != nil {
		t.Fatalf("output does not parse: %v", err)
	}
	return c.out
}

func find(els []parsed, path ...uint32) *parsed {
	for i := range els {
		if len(els[i].path) == len(path) && equalPath(els[i].path, path) {
			return &els[i]
		}
	}
	return nil
}

func equalPath(a, b []uint32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var testKey = bytes.Repeat([]byte{0x5a}, 32)

func testProfile(t testing.TB, c Config) *Profile {
	t.Helper()
	if c.Key == nil {
		c.Key = testKey
	}
	p, err := NewProfile(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run transforms b in one piece.
func run(t testing.TB, p *Profile, explicit bool, b []byte) ([]byte, Result, error) {
	t.Helper()
	ts := ImplicitVRLittleEndian
	if explicit {
		ts = ExplicitVRLittleEndian
	}
	tr, err := New(p, ts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Write(b); err != nil {
		return nil, tr.Result(), err
	}
	if err := tr.Close(); err != nil {
		return nil, tr.Result(), err
	}
	return tr.Next(nil), tr.Result(), nil
}
