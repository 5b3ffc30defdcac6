package audit

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// fillAll sets every field of the struct v points to, recursively, to a
// value that is not zero, so that a record has every key the schema has.
func fillAll(t *testing.T, v reflect.Value) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("v-" + sf.Name + " ✓")
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(7 + i))
		case reflect.Uint64:
			f.SetUint(uint64(11 + i))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a-" + sf.Name, "b"}))
		case reflect.Pointer:
			p := reflect.New(f.Type().Elem())
			if p.Elem().Kind() == reflect.Bool {
				p.Elem().SetBool(true)
			} else {
				fillAll(t, p.Elem())
			}
			f.Set(p)
		case reflect.Struct:
			if f.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("field %s: no filler for %s", sf.Name, f.Type())
			}
			f.Set(reflect.ValueOf(time.Date(2026, 11, 25, 1, 2, 3, 456, time.UTC)))
		default:
			t.Fatalf("field %s: no filler for %s", sf.Name, f.Type())
		}
	}
}

// Every field the Writer writes is on the fast path: a field added to
// Event without a case in decodeEvent fails here, not silently slowly.
func TestDecodeEventEveryField(t *testing.T) {
	var e Event
	fillAll(t, reflect.ValueOf(&e).Elem())
	line := e.appendJSON(nil)
	var got Event
	d := eventDecoder{b: line}
	if !d.event(&got) {
		t.Fatalf("the fast path gave up at byte %d of\n%s", d.i, line)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, e)
	}
}

var decodeSeeds = []string{
	`{"time":"2026-11-25T01:02:03.000000004Z","event":"dimse","seq":3,"prev":"00","allowed":false,"contexts":[]}`,
	`{"client":{},"user_identity":{"type":"username"},"contexts":["1.2"]}`,
	` { "seq" : 1 , "event" : "x" } `,
	`{"event":"a\"b","detail":"caf\u00e9 \ud83d\ude00"}`,
	`{"event":null,"client":null,"allowed":null}`,
	`{"Event":"case","CN":1}`,
	`{"seq":-0}`, `{"seq":-1}`, `{"seq":18446744073709551615}`, `{"seq":18446744073709551616}`,
	`{"ms":1.0}`, `{"ms":1e3}`, `{"ms":01}`, `{"ms":-9223372036854775808}`, `{"ms":9223372036854775808}`,
	`{"client":{"cn":"a"},"client":{"dns":["b"]}}`,
	`{"contexts":["a"],"contexts":["b","c"]}`,
	`{"allowed":true,"allowed":false}`,
	`{"time":"2026-11-25T01:02:03Z"}`, `{"time":"2026-11-25 01:02:03Z"}`, `{"time":""}`, `{"time":5}`,
	`{"event":"caf` + "\xe9" + `"}`, "{\"event\":\"tab\there\"}", "{\"event\":\"del\x7f\"}",
	`{"unknown":{"nested":[1,2,{"x":null}]},"event":"e"}`,
	`{"seq":1,}`, `{"seq":1}x`, `{"seq":1}{}`, `[]`, `"x"`, ``, `{`, `{"event"}`, `{"event":"x"`, `{"allowed":truex}`,
	`{"rule":""}`, `{"":1}`,
}

// FuzzDecodeEvent holds decodeEvent to encoding/json: for any line both
// fail, or both succeed with the same record.
func FuzzDecodeEvent(f *testing.F) {
	for i := range 3 {
		e := sampleEvent(i)
		e.Time = time.Date(2026, 11, 25, 1, 2, 3, i, time.UTC)
		f.Add(e.appendJSON(nil))
	}
	hostile := Event{Event: EventRejected, CallingAE: "A\"B\\C\n\x00\x1b[31m", Detail: "caf\xe9 \u2028 \u202e", UserIdentity: &UserIdentity{User: "ü"}}
	f.Add(hostile.appendJSON(nil))
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast, slow Event
		errFast := decodeEvent(line, &fast)
		errSlow := json.Unmarshal(line, (*plainEvent)(&slow))
		if (errFast == nil) != (errSlow == nil) {
			t.Fatalf("decodeEvent error %v, encoding/json error %v, for %q", errFast, errSlow, line)
		}
		if errFast == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decodeEvent\n%+v\nencoding/json\n%+v\nfor %q", fast, slow, line)
		}
	})
}

func BenchmarkDecodeEvent(b *testing.B) {
	e := sampleEvent(1)
	e.Time = time.Now()
	line := e.appendJSON(nil)
	for _, name := range []string{"fast", "encoding/json"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for i := 0; i < b.N; i++ {
				var got Event
				var err error
				if name == "fast" {
					err = decodeEvent(line, &got)
				} else {
					err = json.Unmarshal(line, (*plainEvent)(&got))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
