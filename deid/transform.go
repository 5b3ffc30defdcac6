package deid

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/text/transform"
)

// Transfer syntaxes (PS3.5 A.1, A.2, A.5) that matter here.
const (
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
	DeflatedExplicitVRLE   = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian    = "1.2.840.10008.1.2.2"
	// The JPIP Referenced Deflate syntaxes deflate the data set as
	// Deflated Explicit VR Little Endian does (PS3.5 A.6, A.7, A.52).
	jpipReferencedDeflate      = "1.2.840.10008.1.2.4.95"
	jpipHTJ2KReferencedDeflate = "1.2.840.10008.1.2.4.205"
	standardSyntaxes           = "1.2.840.10008.1.2"
)

// Supported reports whether the transform can read data sets in
// transferSyntax: Implicit and Explicit VR Little Endian, and the
// encapsulated syntaxes, whose data set is Explicit VR Little Endian
// (PS3.5 A.4). Deflated and big endian data sets it cannot rewrite, nor
// a data set in a private transfer syntax, whose encoding it cannot know.
func Supported(transferSyntax string) bool {
	ts := strings.TrimRight(transferSyntax, "\x00 ")
	switch ts {
	case DeflatedExplicitVRLE, ExplicitVRBigEndian, jpipReferencedDeflate, jpipHTJ2KReferencedDeflate:
		return false
	}
	return ts == standardSyntaxes || strings.HasPrefix(ts, standardSyntaxes+".")
}

// RefusedError is an instance the profile does not let through: it
// cannot be cleaned here (burned-in annotation, an encapsulated document)
// or it is over the transform's bounds or unreadable.
type RefusedError struct {
	Reason string // burned-in-annotation, encapsulated-document, over-bound, malformed-data-set, transfer-syntax
	Detail string
	Err    error // the MalformedError, for malformed-data-set
}

func (e *RefusedError) Error() string { return e.Reason + ": " + e.Detail }
func (e *RefusedError) Unwrap() error { return e.Err }

// Result is what a de-identified instance became, for the audit trail.
type Result struct {
	Profile                      string
	OriginalPatientID, Pseudonym string
	OriginalStudyUID, StudyUID   string
	OriginalSeriesUID, SeriesUID string
	OriginalSOPInstanceUID       string
	SOPInstanceUID               string
	SOPClassUID                  string
}

// Explanation is one attribute's action, for `dicomedge deidentify --explain`.
type Explanation struct {
	Tag    uint32
	Depth  int
	Action Action
	Why    string
}

// Transformer de-identifies one data set. It is fed the data set's bytes
// in any fragmentation with Write and Close, and gives its output through
// Next (or as a golang.org/x/text/transform.Transformer); the same bytes
// give the same output however they are cut.
type Transformer struct {
	p        *Profile
	explicit bool
	phase    uint8 // phaseScan, phaseRewrite, phaseDone
	pre      []byte
	scan     scanSink
	scanW    *walker
	rw       rewriteSink
	rwW      *walker
	out      []byte
	res      Result
	err      error
	started  bool
	explain  func(Explanation)
}

const (
	phaseScan = iota
	phaseRewrite
	phaseDone
)

// scanChunk is the most the scan phase reads at once, so the held header
// stays within MaxHeader plus this.
const scanChunk = 16 << 10

// New returns a Transformer for one data set encoded in transferSyntax.
func New(p *Profile, transferSyntax string) (*Transformer, error) {
	ts := strings.TrimRight(transferSyntax, "\x00 ")
	if !Supported(ts) {
		return nil, &RefusedError{Reason: "transfer-syntax", Detail: fmt.Sprintf("data sets in transfer syntax %s cannot be rewritten", ts)}
	}
	t := &Transformer{p: p, explicit: ts != ImplicitVRLittleEndian}
	t.scan.t = t
	t.scanW = newWalker(t.explicit, &t.scan)
	return t, nil
}

// Explain makes the transformer report each attribute's action to f.
func (t *Transformer) Explain(f func(Explanation)) { t.explain = f }

// Result is what the instance became; complete once the verdict point is
// passed (Started) and final after Close.
func (t *Transformer) Result() Result { return t.res }

// Started reports whether any output has been given: before, a refusal
// leaves nothing anywhere; after, the receiver has part of the instance.
func (t *Transformer) Started() bool { return t.started }

var errVerdict = errors.New("verdict point")

// Write feeds the next bytes of the data set.
func (t *Transformer) Write(b []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	total := len(b)
	for t.phase == phaseScan && len(b) > 0 {
		piece := b[:min(len(b), scanChunk)]
		b = b[len(piece):]
		t.pre = append(t.pre, piece...)
		_, err := t.scanW.feed(piece)
		switch {
		case err == errVerdict:
			if err := t.startRewrite(); err != nil {
				return total, t.fail(err)
			}
		case err != nil:
			return total, t.fail(err)
		case len(t.pre) > t.p.MaxHeader:
			return total, t.fail(&RefusedError{Reason: "over-bound",
				Detail: fmt.Sprintf("more than %d bytes of the data set come before Pixel Data", t.p.MaxHeader)})
		}
	}
	if t.phase == phaseRewrite && len(b) > 0 {
		if _, err := t.rwW.feed(b); err != nil {
			return total, t.fail(err)
		}
	}
	if t.phase == phaseDone && len(b) > 0 {
		return total, t.fail(&MalformedError{Msg: "bytes after the end of the data set"})
	}
	return total, nil
}

// Close ends the data set.
func (t *Transformer) Close() error {
	if t.err != nil {
		return t.err
	}
	if t.phase == phaseScan {
		if err := t.scanW.finish(); err != nil {
			return t.fail(err)
		}
		if err := t.startRewrite(); err != nil {
			return t.fail(err)
		}
	}
	if t.phase == phaseRewrite {
		if err := t.rwW.finish(); err != nil {
			return t.fail(err)
		}
		t.rw.insertUpTo(0xFFFFFFFF)
		t.started = true
		t.phase = phaseDone
	}
	return nil
}

func (t *Transformer) fail(err error) error {
	var m *MalformedError
	if errors.As(err, &m) {
		if _, ok := err.(*RefusedError); !ok {
			err = &RefusedError{Reason: "malformed-data-set", Detail: m.Msg, Err: m}
		}
	}
	t.err = err
	t.out = t.out[:0]
	return err
}

// Next appends the output given so far to dst and forgets it.
func (t *Transformer) Next(dst []byte) []byte {
	dst = append(dst, t.out...)
	t.out = t.out[:0]
	return dst
}

// Take gives the output so far without copying it: the slice is valid
// until the next Write or Close.
func (t *Transformer) Take() []byte {
	out := t.out
	t.out = t.out[:0]
	return out
}

// Pending is how many output bytes Next would give.
func (t *Transformer) Pending() int { return len(t.out) }

// startRewrite decides at the verdict point and runs the rewrite over
// the held bytes.
func (t *Transformer) startRewrite() error {
	s := &t.scan
	if err := s.verdict(); err != nil {
		return err
	}
	p := t.p
	patient := s.patientID
	if strings.TrimSpace(patient) == "" {
		// No Patient ID: the study stands for the patient, so that
		// patients without an ID are not all linked together.
		patient = "study:" + s.studyUID
	}
	t.res = Result{Profile: p.Name, OriginalPatientID: s.patientID, Pseudonym: p.PatientPseudonym(patient),
		OriginalStudyUID: s.studyUID, OriginalSeriesUID: s.seriesUID, OriginalSOPInstanceUID: s.sopInstance,
		SOPClassUID: s.sopClass}
	t.res.StudyUID, t.res.SeriesUID, t.res.SOPInstanceUID = t.mapUID(tagStudyInstanceUID, s.studyUID),
		t.mapUID(tagSeriesInstanceUID, s.seriesUID), t.mapUID(tagSOPInstanceUID, s.sopInstance)
	t.rw = rewriteSink{t: t, shift: p.DayShift(patient), words: s.words}
	t.rw.stack = append(t.rw.stack, outFrame{})
	t.rw.inserts = t.inserts()
	t.rwW = newWalker(t.explicit, &t.rw)
	t.phase = phaseRewrite
	pre := t.pre
	t.pre = nil
	t.started = true
	if _, err := t.rwW.feed(pre); err != nil {
		return err
	}
	return nil
}

// mapUID is what a top-level UID attribute becomes.
func (t *Transformer) mapUID(tag uint32, uid string) string {
	if uid == "" {
		return ""
	}
	switch a, _ := t.p.Decide(tag); a {
	case UID, Dummy, Clean:
		return t.p.NewUID(uid)
	case Keep, Verbatim:
		return uid
	}
	return ""
}

// MapUID is the UID the profile gives uid wherever the table says U
// (the C-STORE request's Affected SOP Instance UID follows the data set's).
func (t *Transformer) MapUID(uid string) string { return t.mapUID(tagSOPInstanceUID, uid) }

// Transform makes a Transformer a transform.Transformer, for files.
func (t *Transformer) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for {
		n := copy(dst[nDst:], t.out)
		nDst += n
		t.out = t.out[:copy(t.out, t.out[n:])]
		switch {
		case len(t.out) > 0:
			return nDst, nSrc, transform.ErrShortDst
		case nSrc < len(src):
			if _, err := t.Write(src[nSrc:]); err != nil {
				return nDst, nSrc, err
			}
			nSrc = len(src)
		case atEOF && t.phase != phaseDone:
			if err := t.Close(); err != nil {
				return nDst, nSrc, err
			}
		default:
			return nDst, nSrc, nil
		}
	}
}

// Reset is not supported beyond a fresh Transformer: one data set each.
func (t *Transformer) Reset() {}

// scanSink reads the top level of the held header: what the verdict and
// the replacements need.
type scanSink struct {
	t                                           *Transformer
	reading                                     uint32 // the tag whose value is being read, 0 for none
	collect                                     bool   // reading identifying text for cleaning
	val                                         []byte
	sopClass                                    string
	sopInstance, studyUID, seriesUID, patientID string
	burnedIn                                    string
	hasBurned                                   bool
	encapsulatedDoc                             bool
	words                                       map[string]bool
}

func (s *scanSink) element(w *walker, e *elem) error {
	if e.depth != 0 {
		return nil
	}
	if e.tag > tagEncapsulatedDocument {
		return errVerdict
	}
	s.reading, s.collect = 0, false
	switch e.tag {
	case tagSOPClassUID, tagSOPInstanceUID, tagStudyInstanceUID, tagSeriesInstanceUID, tagPatientID, tagBurnedInAnnotation:
		s.reading = e.tag
	case tagEncapsulatedDocument:
		s.encapsulatedDoc = true
	}
	if s.reading == 0 && !e.seq && e.length != undefinedLength && (e.as == vrPN || e.as == vrLO || e.as == vrSH) {
		if a, _ := s.t.p.Decide(e.tag); a != Keep && a != Verbatim && a != Clean {
			s.collect = true
		}
	}
	if (s.reading != 0 || s.collect) && e.length != undefinedLength && int(e.length) > s.t.p.MaxValue {
		return &RefusedError{Reason: "over-bound", Detail: fmt.Sprintf("%s has a value of %d bytes, over %d", FormatTag(e.tag), e.length, s.t.p.MaxValue)}
	}
	s.val = s.val[:0]
	return nil
}

func (s *scanSink) value(b []byte) error {
	if s.reading != 0 || s.collect {
		s.val = append(s.val, b...)
	}
	return nil
}

func (s *scanSink) valueEnd() error {
	v := strings.TrimRight(string(s.val), "\x00 ")
	switch s.reading {
	case tagSOPClassUID:
		s.sopClass = v
	case tagSOPInstanceUID:
		s.sopInstance = v
	case tagStudyInstanceUID:
		s.studyUID = v
	case tagSeriesInstanceUID:
		s.seriesUID = v
	case tagPatientID:
		s.patientID = strings.TrimSpace(v)
		s.addWords(v)
	case tagBurnedInAnnotation:
		s.burnedIn, s.hasBurned = strings.ToUpper(strings.TrimSpace(v)), true
	}
	if s.collect {
		s.addWords(v)
	}
	s.reading, s.collect = 0, false
	return nil
}

// addWords remembers the words of an identifying value (names, IDs,
// institutions) that a cleaned descriptor must not repeat.
func (s *scanSink) addWords(v string) {
	if s.words == nil {
		s.words = map[string]bool{}
	}
	for _, w := range strings.FieldsFunc(strings.ToUpper(v), notAlnum) {
		if len(w) >= 3 && len(s.words) < 1024 {
			s.words[w] = true
		}
	}
}

func notAlnum(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r >= 0x80)
}

func (s *scanSink) item(*walker, *elem) error { return nil }
func (s *scanSink) itemEnd([]byte) error      { return nil }
func (s *scanSink) seqEnd([]byte) error       { return nil }

// burnedInClasses are the SOP classes whose images typically carry
// burned-in text when Burned In Annotation is absent (docs/deidentify.md):
// Secondary Capture, Ultrasound and the visible-light endoscopic family
// (PS3.4 Annex B, Table B.5-1).
var burnedInClasses = map[string]bool{
	"1.2.840.10008.5.1.4.1.1.7":        true, // Secondary Capture Image
	"1.2.840.10008.5.1.4.1.1.7.1":      true, // Multi-frame Single Bit SC
	"1.2.840.10008.5.1.4.1.1.7.2":      true, // Multi-frame Grayscale Byte SC
	"1.2.840.10008.5.1.4.1.1.7.3":      true, // Multi-frame Grayscale Word SC
	"1.2.840.10008.5.1.4.1.1.7.4":      true, // Multi-frame True Color SC
	"1.2.840.10008.5.1.4.1.1.6.1":      true, // Ultrasound Image
	"1.2.840.10008.5.1.4.1.1.6.2":      true, // Enhanced US Volume
	"1.2.840.10008.5.1.4.1.1.3.1":      true, // Ultrasound Multi-frame Image
	"1.2.840.10008.5.1.4.1.1.77.1.1":   true, // VL Endoscopic Image
	"1.2.840.10008.5.1.4.1.1.77.1.1.1": true, // Video Endoscopic Image
}

func (s *scanSink) verdict() error {
	p := s.t.p
	if s.sopClass == "" {
		// Type 1 in every stored instance (PS3.3 C.12.1): without it the
		// bytes are not the data set they claim to be (a big endian data
		// set announced as little endian reads as elements of tags no
		// table lists), and nothing of them may start to go out.
		return &RefusedError{Reason: "malformed-data-set",
			Detail: "no SOP Class UID (0008,0016) at the top level before the verdict point"}
	}
	if s.encapsulatedDoc && !p.keep[tagEncapsulatedDocument] {
		return &RefusedError{Reason: "encapsulated-document", Detail: "Encapsulated Document (0042,0011) is present and not in the profile's keep list"}
	}
	if !p.burnedIn {
		switch {
		case s.hasBurned && s.burnedIn == "YES":
			return &RefusedError{Reason: "burned-in-annotation", Detail: "Burned In Annotation (0028,0301) is YES"}
		case !s.hasBurned && burnedInClasses[s.sopClass]:
			return &RefusedError{Reason: "burned-in-annotation", Detail: fmt.Sprintf("Burned In Annotation (0028,0301) is absent on SOP class %s", s.sopClass)}
		}
	}
	return nil
}

// outFrame is how the rewrite writes a container's content.
type outFrame struct {
	drop bool // nothing of it is written
	raw  bool // written as it came
}

// An insertion is a top-level element the profile adds (PS3.15 E.1.1).
type insertion struct {
	tag uint32
	enc func(dst []byte) []byte
}

// rewriteSink writes the de-identified data set.
type rewriteSink struct {
	t       *Transformer
	stack   []outFrame
	inserts []insertion
	shift   int
	words   map[string]bool
	// The value in progress.
	mode valueMode
	cur  elem
	act  Action
	val  []byte
}

type valueMode uint8

const (
	vmPass  valueMode = iota // written as it came
	vmSkip                   // left out
	vmZeros                  // its length in zero bytes
	vmRead                   // read whole, then replaced
)

func (r *rewriteSink) top() outFrame { return r.stack[len(r.stack)-1] }

func (r *rewriteSink) emit(b ...byte) { r.t.out = append(r.t.out, b...) }

// insertUpTo writes the insertions before tag.
func (r *rewriteSink) insertUpTo(tag uint32) {
	for len(r.inserts) > 0 && r.inserts[0].tag < tag {
		r.t.out = r.inserts[0].enc(r.t.out)
		r.inserts = r.inserts[1:]
	}
}

func (r *rewriteSink) element(w *walker, e *elem) error {
	f := r.top()
	container := e.length == undefinedLength || e.seq
	if f.drop || f.raw {
		if !f.drop {
			r.emit(e.raw...)
		}
		if container {
			r.stack = append(r.stack, f)
		}
		r.mode = vmPass
		if f.drop {
			r.mode = vmSkip
		}
		return nil
	}
	act, why := r.t.p.Decide(e.tag)
	if e.depth == 0 {
		r.insertUpTo(e.tag)
		if len(r.inserts) > 0 && r.inserts[0].tag == e.tag {
			act, why = Remove, "written by the profile"
			r.t.out = r.inserts[0].enc(r.t.out)
			r.inserts = r.inserts[1:]
		}
	}
	if e.tag == tagEncapsulatedDocument && act != Verbatim {
		act, why = Remove, "encapsulated document"
	}
	if r.t.explain != nil {
		r.t.explain(Explanation{Tag: e.tag, Depth: e.depth, Action: act, Why: why})
	}
	r.cur, r.act, r.val = *e, act, r.val[:0]
	r.cur.raw = nil
	if container {
		frags := e.length == undefinedLength && !e.seq // encapsulated Pixel Data
		switch {
		case act == Remove:
			r.stack = append(r.stack, outFrame{drop: true})
		case act == Zero:
			r.header(e, 0)
			r.stack = append(r.stack, outFrame{drop: true})
		case act == Verbatim || frags:
			r.emit(e.raw...)
			r.stack = append(r.stack, outFrame{raw: true})
		case act == Dummy:
			// A dummy sequence: one empty item, nothing of the original.
			r.header(e, undefinedLength)
			r.emit(0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
			r.stack = append(r.stack, outFrame{drop: true})
		default:
			// The sequence is entered and cleaned by the table: written
			// with undefined length, so nothing need be held to count it
			// (PS3.5 7.5).
			r.header(e, undefinedLength)
			r.stack = append(r.stack, outFrame{})
		}
		return nil
	}
	// The value is judged by its attribute's VR (e.as), whatever VR it
	// came under: a date sent as UN or TM is still a date to shift, a
	// UID sent as LO still a UID to replace.
	r.mode = vmPass
	switch act {
	case Remove:
		r.mode = vmSkip
	case Zero:
		r.header(e, 0)
		r.mode = vmSkip
	case Keep, Verbatim:
		r.emit(e.raw...)
	case Dummy:
		switch {
		case e.as == vrUI:
			r.mode = vmRead
		case e.as.text():
			r.mode = vmSkip
			r.writeValue(e, dummy(e.as))
		default:
			r.emit(e.raw...)
			r.mode = vmZeros
		}
	case UID:
		if e.as == vrUI || e.as == vrUN {
			r.mode = vmRead
		} else {
			r.emit(e.raw...) // a U on a non-UID VR: kept (the table puts U only on UIDs and sequences)
		}
	case Clean:
		switch {
		case e.as == vrTM || !e.as.text() && e.as != vrUN:
			r.emit(e.raw...)
		default:
			r.mode = vmRead
		}
	case Replace:
		r.mode = vmSkip
		r.writeValue(e, r.t.p.replace[e.tag])
	case Pseudonym:
		r.mode = vmSkip
		r.writeValue(e, r.t.res.Pseudonym)
	}
	if r.mode == vmRead && int(e.length) > r.t.p.MaxValue {
		return &RefusedError{Reason: "over-bound", Detail: fmt.Sprintf("%s has a value of %d bytes, over %d", FormatTag(e.tag), e.length, r.t.p.MaxValue)}
	}
	return nil
}

func (r *rewriteSink) value(b []byte) error {
	switch r.mode {
	case vmPass:
		r.emit(b...)
	case vmZeros:
		for range b {
			r.t.out = append(r.t.out, 0)
		}
	case vmRead:
		r.val = append(r.val, b...)
	}
	return nil
}

func (r *rewriteSink) valueEnd() error {
	if r.mode != vmRead {
		r.mode = vmPass
		return nil
	}
	r.mode = vmPass
	e := &r.cur
	v := string(r.val)
	switch {
	case r.act == UID || e.as == vrUI:
		parts := strings.Split(strings.TrimRight(v, "\x00 "), "\\")
		for i, u := range parts {
			parts[i] = r.t.p.NewUID(u)
		}
		r.writeValue(e, strings.Join(parts, "\\"))
	case r.act == Clean && (e.as == vrDA || e.as == vrDT) && r.t.p.options[optModifiedDates]:
		r.writeValue(e, shiftDates(v, e.as, r.shift))
	case r.act == Clean && (e.as == vrDA || e.as == vrDT):
		r.writeValue(e, dummy(e.as))
	default:
		r.writeValue(e, r.clean(v, e.as))
	}
	return nil
}

// header writes e's header with a new value length.
func (r *rewriteSink) header(e *elem, length uint32) {
	r.t.out = appendHeader(r.t.out, e.explicit, e.tag, e.vr, length)
}

// writeValue writes e with the string value s, padded to even length
// (PS3.5 6.2: UIDs with NUL, other strings with a space).
func (r *rewriteSink) writeValue(e *elem, s string) {
	if !e.vr.longHeader() && len(s) > 0xfffe {
		s = s[:0xfffe]
	}
	r.t.out = appendElement(r.t.out, e.explicit, e.tag, e.vr, s)
}

func (r *rewriteSink) item(w *walker, e *elem) error {
	f := r.top()
	if w.top().kind == fFrags {
		// A fragment of encapsulated pixel data: as it came, or not at all.
		if !f.drop {
			r.emit(e.raw...)
			r.mode = vmPass
		} else {
			r.mode = vmSkip
		}
		return nil
	}
	switch {
	case f.drop:
	case f.raw:
		r.emit(e.raw...)
	default:
		r.emit(0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF)
	}
	r.stack = append(r.stack, f)
	return nil
}

func (r *rewriteSink) itemEnd(raw []byte) error {
	f := r.top()
	r.stack = r.stack[:len(r.stack)-1]
	switch {
	case f.drop:
	case f.raw:
		r.emit(raw...) // nil for an item of defined length
	default:
		r.emit(0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0)
	}
	return nil
}

func (r *rewriteSink) seqEnd(raw []byte) error {
	f := r.top()
	r.stack = r.stack[:len(r.stack)-1]
	switch {
	case f.drop:
	case f.raw:
		r.emit(raw...)
	default:
		r.emit(0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
	}
	return nil
}

// dummy is a value of v that says nothing (action D).
func dummy(v vr) string {
	switch v {
	case vrDA:
		return "19000101"
	case vrTM:
		return "000000"
	case vrDT:
		return "19000101000000"
	case vrAS:
		return "000Y"
	case vrDS, vrIS:
		return "0"
	}
	return "ANONYMIZED"
}

// shiftDates moves each date value by days; a value it cannot read as a
// date becomes the dummy date.
func shiftDates(v string, kind vr, days int) string {
	parts := strings.Split(strings.TrimRight(v, "\x00 "), "\\")
	for i, s := range parts {
		if len(s) < 8 {
			parts[i] = dummy(kind)
			continue
		}
		d, err := time.Parse("20060102", s[:8])
		if err != nil || kind == vrDA && len(s) != 8 {
			parts[i] = dummy(kind)
			continue
		}
		parts[i] = d.AddDate(0, 0, days).Format("20060102") + s[8:]
	}
	return strings.Join(parts, "\\")
}

// clean keeps a descriptor's meaning without what identifies: every word
// that was a value of an identifying attribute of this data set (a name,
// an ID, an institution) and every run of four or more digits, inside a
// word too (dates, record numbers, telephone numbers), becomes X's.
func (r *rewriteSink) clean(v string, kind vr) string {
	b := []byte(strings.TrimRight(v, "\x00 "))
	for i := 0; i < len(b); {
		if notAlnum(rune(b[i])) {
			i++
			continue
		}
		j := i
		for j < len(b) && !notAlnum(rune(b[j])) {
			j++
		}
		if r.words[strings.ToUpper(string(b[i:j]))] {
			for k := i; k < j; k++ {
				b[k] = 'X'
			}
		}
		// Runs of four or more digits, also inside a word (MRN12345).
		for k := i; k < j; {
			if b[k] < '0' || b[k] > '9' {
				k++
				continue
			}
			e := k
			for e < j && b[e] >= '0' && b[e] <= '9' {
				e++
			}
			if e-k >= 4 {
				for x := k; x < e; x++ {
					b[x] = 'X'
				}
			}
			k = e
		}
		i = j
	}
	if m := kind.maxLen(); m > 0 && len(b) > m*8 {
		b = b[:m*8]
	}
	return string(b)
}

// inserts are the attributes PS3.15 E.1.1 has a de-identifier add, in tag
// order: Patient Identity Removed, De-identification Method and its Code
// Sequence, Longitudinal Temporal Information Modified.
func (t *Transformer) inserts() []insertion {
	p := t.p
	csEl := func(tag uint32, vr vr, s string) func([]byte) []byte {
		return func(dst []byte) []byte { return appendElement(dst, t.explicit, tag, vr, s) }
	}
	method := "dicomedge PS3.15 E.1-1 basic profile"
	if p.Name != "" && len(method)+len(p.Name)+3 <= 64 {
		method += " (" + p.Name + ")"
	}
	codes := []struct{ code, meaning string }{{basicCode, basicMeaning}}
	for i, o := range Options {
		if p.options[i] {
			codes = append(codes, struct{ code, meaning string }{o.Code, o.Meaning})
		}
	}
	temporal := "REMOVED"
	switch {
	case p.options[optFullDates]:
		temporal = "UNMODIFIED"
	case p.options[optModifiedDates]:
		temporal = "MODIFIED"
	}
	return []insertion{
		{tagPatientIdentityRemoved, csEl(tagPatientIdentityRemoved, vrCS, "YES")},
		{tagDeidentificationMethod, csEl(tagDeidentificationMethod, vrLO, method)},
		{tagDeidentificationMethodCodeSq, func(dst []byte) []byte {
			dst = appendHeader(dst, t.explicit, tagDeidentificationMethodCodeSq, vrSQ, undefinedLength)
			for _, c := range codes {
				dst = append(dst, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF)
				dst = appendElement(dst, t.explicit, tagCodeValue, vrSH, c.code)
				dst = appendElement(dst, t.explicit, tagCodingSchemeDesignator, vrSH, "DCM")
				dst = appendElement(dst, t.explicit, tagCodeMeaning, vrLO, c.meaning)
				dst = append(dst, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0)
			}
			return append(dst, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
		}},
		{tagLongitudinalTemporalModified, csEl(tagLongitudinalTemporalModified, vrCS, temporal)},
	}
}

func appendHeader(dst []byte, explicit bool, tag uint32, v vr, length uint32) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag>>16))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag))
	switch {
	case !explicit:
		return binary.LittleEndian.AppendUint32(dst, length)
	case v.longHeader():
		dst = append(dst, byte(v>>8), byte(v), 0, 0)
		return binary.LittleEndian.AppendUint32(dst, length)
	}
	dst = append(dst, byte(v>>8), byte(v))
	return binary.LittleEndian.AppendUint16(dst, uint16(length))
}

func appendElement(dst []byte, explicit bool, tag uint32, v vr, s string) []byte {
	pad := len(s) % 2
	dst = appendHeader(dst, explicit, tag, v, uint32(len(s)+pad))
	dst = append(dst, s...)
	if pad == 1 {
		if v == vrUI {
			return append(dst, 0)
		}
		return append(dst, ' ')
	}
	return dst
}
