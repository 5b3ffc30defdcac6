package audit

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// decodeEvent decodes one record line into e exactly as encoding/json
// would (decoding into plainEvent), but without reflection: reading a log
// (`dicomedge audit`, `policy replay` over millions of records) is bound by
// decoding. The fast path takes what the Writer writes: the known keys,
// strings without escapes, integers, booleans. Anything else (an escape, an
// unknown or differently cased key, null, a fraction, invalid UTF-8, bad
// syntax) goes to encoding/json, so every line decodes as before.
func decodeEvent(line []byte, e *Event) error {
	d := eventDecoder{b: line}
	if d.event(e) {
		return nil
	}
	*e = Event{}
	return json.Unmarshal(line, (*plainEvent)(e))
}

type eventDecoder struct {
	b []byte
	i int
}

func (d *eventDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips white space and consumes c.
func (d *eventDecoder) next(c byte) bool {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// peek skips white space and reports whether c is next, without consuming it.
func (d *eventDecoder) peek(c byte) bool {
	d.ws()
	return d.i < len(d.b) && d.b[d.i] == c
}

// raw returns the bytes of a string without escapes or control
// characters, quotes excluded.
func (d *eventDecoder) raw() ([]byte, bool) {
	if !d.next('"') {
		return nil, false
	}
	start := d.i
	ascii := true
	for ; d.i < len(d.b); d.i++ {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false // encoding/json substitutes U+FFFD
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (d *eventDecoder) str(dst *string) bool {
	s, ok := d.raw()
	if ok {
		*dst = string(s)
	}
	return ok
}

func (d *eventDecoder) strs(dst *[]string) bool {
	if !d.next('[') {
		return false
	}
	out := []string{} // encoding/json makes [] an empty, non-nil slice
	if d.next(']') {
		*dst = out
		return true
	}
	for {
		var s string
		if !d.str(&s) {
			return false
		}
		out = append(out, s)
		if d.next(']') {
			*dst = out
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// integer reads a JSON integer (no fraction or exponent) as int64.
func (d *eventDecoder) integer() (int64, bool) {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || (n > 1 && d.b[digits] == '0') {
		return 0, false
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(string(d.b[start:d.i]), 10, 64)
	return v, err == nil
}

func (d *eventDecoder) int(dst *int) bool {
	v, ok := d.integer()
	if ok && int64(int(v)) == v {
		*dst = int(v)
		return true
	}
	return false
}

func (d *eventDecoder) int64(dst *int64) bool {
	v, ok := d.integer()
	if ok {
		*dst = v
	}
	return ok
}

func (d *eventDecoder) uint64(dst *uint64) bool {
	if d.peek('-') {
		return false // even "-0": encoding/json refuses a sign for unsigned fields
	}
	v, ok := d.integer()
	if ok {
		*dst = uint64(v)
		return true
	}
	return false // negative, or beyond int64: encoding/json decides
}

func (d *eventDecoder) boolean(dst **bool) bool {
	d.ws()
	var v bool
	switch {
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		v, d.i = true, d.i+4
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
	default:
		return false
	}
	if *dst == nil {
		*dst = new(bool)
	}
	**dst = v
	return true
}

// object calls member for each key of an object until it returns false.
func (d *eventDecoder) object(member func(key []byte) bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	for {
		key, ok := d.raw()
		if !ok || !d.next(':') || !member(key) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

func (d *eventDecoder) event(e *Event) bool {
	ok := d.object(func(key []byte) bool {
		switch string(key) {
		case "time":
			return d.time(&e.Time)
		case "event":
			return d.str(&e.Event)
		case "seq":
			return d.uint64(&e.Seq)
		case "prev":
			return d.str(&e.Prev)
		case "conn":
			return d.str(&e.Conn)
		case "assoc":
			return d.str(&e.Assoc)
		case "remote":
			return d.str(&e.Remote)
		case "client":
			if e.Client == nil {
				e.Client = &Client{}
			}
			return d.client(e.Client)
		case "calling_ae":
			return d.str(&e.CallingAE)
		case "called_ae":
			return d.str(&e.CalledAE)
		case "listener":
			return d.str(&e.Listener)
		case "user":
			return d.str(&e.User)
		case "reason":
			return d.str(&e.Reason)
		case "rule":
			return d.str(&e.Rule)
		case "action":
			return d.str(&e.Action)
		case "backend":
			return d.str(&e.Backend)
		case "contexts":
			return d.strs(&e.Contexts)
		case "user_identity":
			if e.UserIdentity == nil {
				e.UserIdentity = &UserIdentity{}
			}
			u := e.UserIdentity
			return d.object(func(key []byte) bool {
				switch string(key) {
				case "type":
					return d.str(&u.Type)
				case "user":
					return d.str(&u.User)
				}
				return false
			})
		case "deidentified":
			if e.Deidentified == nil {
				e.Deidentified = &Deidentified{}
			}
			x := e.Deidentified
			return d.object(func(key []byte) bool {
				switch string(key) {
				case "profile":
					return d.str(&x.Profile)
				case "study_uid":
					return d.str(&x.StudyUID)
				case "series_uid":
					return d.str(&x.SeriesUID)
				case "sop_instance":
					return d.str(&x.SOPInstance)
				case "patient_pseudonym":
					return d.str(&x.PatientPseudonym)
				case "original_series_uid":
					return d.str(&x.OriginalSeries)
				}
				return false
			})
		case "result":
			return d.int(&e.Result)
		case "source":
			return d.int(&e.Source)
		case "reason_code":
			return d.int(&e.ReasonCode)
		case "result_name":
			return d.str(&e.ResultName)
		case "source_name":
			return d.str(&e.SourceName)
		case "service":
			return d.str(&e.Service)
		case "sop_class":
			return d.str(&e.SOPClass)
		case "sop_instance":
			return d.str(&e.SOPInstance)
		case "study_uid":
			return d.str(&e.StudyUID)
		case "message_id":
			return d.int(&e.MessageID)
		case "status":
			return d.str(&e.Status)
		case "move_destination":
			return d.str(&e.MoveDestination)
		case "patient_id":
			return d.str(&e.PatientID)
		case "bytes":
			return d.int64(&e.Bytes)
		case "ms":
			return d.int64(&e.MS)
		case "allowed":
			return d.boolean(&e.Allowed)
		case "bytes_in":
			return d.int64(&e.BytesIn)
		case "bytes_out":
			return d.int64(&e.BytesOut)
		case "abort_source":
			return d.str(&e.AbortSource)
		case "abort_reason":
			return d.str(&e.AbortReason)
		case "detail":
			return d.str(&e.Detail)
		}
		return false // unknown here: encoding/json knows what to do
	})
	d.ws()
	return ok && d.i == len(d.b)
}

// time reads an RFC 3339 string as encoding/json decodes a time.Time.
func (d *eventDecoder) time(t *time.Time) bool {
	d.ws()
	start := d.i
	if _, ok := d.raw(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.b[start:d.i]) == nil
}

func (d *eventDecoder) client(c *Client) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "subject":
			return d.str(&c.Subject)
		case "cn":
			return d.str(&c.CN)
		case "dns":
			return d.strs(&c.DNS)
		case "uri":
			return d.strs(&c.URI)
		case "email":
			return d.strs(&c.Email)
		case "fingerprint":
			return d.str(&c.Fingerprint)
		case "issuer":
			return d.str(&c.Issuer)
		case "serial":
			return d.str(&c.Serial)
		case "not_before":
			return d.time(&c.NotBefore)
		case "not_after":
			return d.time(&c.NotAfter)
		}
		return false
	})
}
