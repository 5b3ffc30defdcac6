package deid

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// Action is what becomes of an attribute (PS3.15 Table E.1-1's codes).
type Action uint8

const (
	Keep      Action = iota // K: kept as it came (sequences still cleaned inside)
	Remove                  // X
	Zero                    // Z: kept with an empty value
	Dummy                   // D: a value of the VR that says nothing
	UID                     // U: a UID derived from the original under the key
	Clean                   // C: kept, cleaned of what identifies (dates shifted, identifiers redacted)
	Replace                 // the policy's replace map
	Pseudonym               // Patient ID and Patient's Name: the patient's pseudonym
	Verbatim                // the policy's keep list: as it came, sequences included
)

var actionNames = [...]string{"keep", "remove", "zero", "dummy", "uid", "clean", "replace", "pseudonym", "keep-verbatim"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action-%d", a)
}

// Option columns of Table E.1-1, in the order of tableRow.opts.
const (
	optFullDates = iota
	optModifiedDates
	optPatientCharacteristics
	optDeviceIdentity
	optInstitutionIdentity
	optUIDs
	optSafePrivate
	optCleanDescriptors
	optCleanStructuredContent
	optCleanGraphics
	numColumns
)

// Options are the option names a policy writes, in column order, with the
// CID 7050 code (PS3.16) that De-identification Method Code Sequence
// carries for each.
var Options = [numColumns]struct{ Name, Code, Meaning string }{
	{"retain-full-dates", "113106", "Retain Longitudinal Temporal Information Full Dates Option"},
	{"retain-modified-dates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"},
	{"retain-patient-characteristics", "113108", "Retain Patient Characteristics Option"},
	{"retain-device-identity", "113109", "Retain Device Identity Option"},
	{"retain-institution-identity", "113112", "Retain Institution Identity Option"},
	{"retain-uids", "113110", "Retain UIDs Option"},
	{"retain-safe-private", "113111", "Retain Safe Private Option"},
	{"clean-descriptors", "113105", "Clean Descriptors Option"},
	{"clean-structured-content", "113104", "Clean Structured Content Option"},
	{"clean-graphics", "113103", "Clean Graphics Option"},
}

// The profile itself (CID 7050).
const basicCode, basicMeaning = "113100", "Basic Application Confidentiality Profile"

// OptionNames lists the option names a policy may write.
func OptionNames() []string {
	n := make([]string, len(Options))
	for i, o := range Options {
		n[i] = o.Name
	}
	return n
}

type tableRow struct {
	tag, mask uint32
	name      string
	basic     string
	opts      [numColumns]string
}

// Profile is a compiled de-identification profile: what the policy's
// deidentify block says, ready to apply. It is immutable and safe to share.
type Profile struct {
	Name     string
	options  [numColumns]bool
	key      []byte
	keep     map[uint32]bool
	remove   map[uint32]bool
	replace  map[uint32]string
	burnedIn bool // pass instances with burned-in annotation
	// MaxHeader bounds the data set bytes held before the verdict point;
	// MaxValue bounds one value read to be replaced. A data set over
	// either is refused, not buffered.
	MaxHeader int
	MaxValue  int
}

// Config is what a Profile is built from (the policy's deidentify block).
type Config struct {
	Name         string
	Options      []string
	Key          []byte
	Keep, Remove []uint32
	Replace      map[uint32]string
	PassBurnedIn bool
	MaxHeader    int
	MaxValue     int
}

// Default bounds of what a transform holds.
const (
	DefaultMaxHeader = 1 << 20
	DefaultMaxValue  = 1 << 20
	MinKeyLen        = 32
)

// NewProfile compiles c.
func NewProfile(c Config) (*Profile, error) {
	if len(c.Key) < MinKeyLen {
		return nil, fmt.Errorf("the key has %d bytes; at least %d are needed", len(c.Key), MinKeyLen)
	}
	p := &Profile{Name: c.Name, key: slices.Clone(c.Key), keep: map[uint32]bool{}, remove: map[uint32]bool{},
		replace: map[uint32]string{}, burnedIn: c.PassBurnedIn, MaxHeader: c.MaxHeader, MaxValue: c.MaxValue}
	if p.MaxHeader <= 0 {
		p.MaxHeader = DefaultMaxHeader
	}
	if p.MaxValue <= 0 {
		p.MaxValue = DefaultMaxValue
	}
	for _, o := range c.Options {
		i := slices.IndexFunc(Options[:], func(x struct{ Name, Code, Meaning string }) bool { return x.Name == o })
		if i < 0 {
			return nil, fmt.Errorf("unknown option %q (one of %s)", o, strings.Join(OptionNames(), ", "))
		}
		p.options[i] = true
	}
	for _, t := range c.Keep {
		p.keep[t] = true
	}
	for _, t := range c.Remove {
		p.remove[t] = true
	}
	for t, v := range c.Replace {
		p.replace[t] = v
	}
	return p, nil
}

// HasOption reports whether the named option applies.
func (p *Profile) HasOption(name string) bool {
	for i, o := range Options {
		if o.Name == name {
			return p.options[i]
		}
	}
	return false
}

// row is tag's row of Table E.1-1, or nil.
func row(tag uint32) *tableRow {
	lo, hi := 0, len(profileTable)
	for lo < hi {
		m := (lo + hi) / 2
		if profileTable[m].tag < tag {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(profileTable) && profileTable[lo].tag == tag && profileTable[lo].mask == 0xffffffff {
		return &profileTable[lo]
	}
	for i := range profileTable {
		r := &profileTable[i]
		if r.mask != 0xffffffff && tag&r.mask == r.tag {
			return r
		}
	}
	return nil
}

// basicAction resolves a Table E.1-1 code, combinations included, to the
// action that keeps any IOD valid without knowing the attribute's type
// there (docs/deidentify.md): X/Z → Z; X/D, Z/D, X/Z/D → D; X/Z/U* → U.
func basicAction(code string) Action {
	switch code {
	case "K":
		return Keep
	case "X":
		return Remove
	case "Z", "X/Z":
		return Zero
	case "D", "X/D", "Z/D", "X/Z/D":
		return Dummy
	case "U", "X/Z/U*", "X/Z/U":
		return UID
	case "C":
		return Clean
	}
	return Remove // a code this table does not use: the safe choice
}

// Decide is the action for tag and the reason, in the order
// docs/deidentify.md gives: the policy's replace, remove and keep lists;
// Patient ID and Patient's Name to the pseudonym; group lengths removed
// (lengths change); private attributes removed; then Table E.1-1 with the
// options (a K of any chosen option, else a C, else the basic profile);
// attributes the table does not list are kept.
func (p *Profile) Decide(tag uint32) (Action, string) {
	if v, ok := p.replace[tag]; ok {
		return Replace, fmt.Sprintf("replace = %q (policy)", v)
	}
	if p.remove[tag] {
		return Remove, "remove (policy)"
	}
	if p.keep[tag] {
		return Verbatim, "keep (policy)"
	}
	switch tag {
	case tagPatientID, tagPatientName:
		return Pseudonym, "pseudonym of the Patient ID (HMAC under the key)"
	}
	if tag&0xffff == 0 {
		return Remove, "group length (lengths change)"
	}
	if (tag>>16)%2 == 1 {
		return Remove, "private attribute (X; no safe private attributes are known to the edge)"
	}
	r := row(tag)
	if r == nil && (tag>>16 == 0x0000 || tag>>16 == 0x0002) {
		// Command (PS3.7 Annex E) and File Meta Information (PS3.10 7.1)
		// elements are no attributes of a data set: sent inside one, what
		// they carry is nothing the profile can judge.
		return Remove, "command or File Meta element in a data set"
	}
	if r == nil {
		return Keep, "not in Table E.1-1"
	}
	var act Action = 255
	why := ""
	for i, code := range r.opts {
		if code == "" || !p.options[i] {
			continue
		}
		switch {
		case code == "K":
			return Keep, fmt.Sprintf("K (%s)", Options[i].Name)
		case code == "C" && act == 255:
			act, why = Clean, fmt.Sprintf("C (%s)", Options[i].Name)
		}
	}
	if act != 255 {
		return act, why
	}
	return basicAction(r.basic), r.basic + " (basic profile)"
}

// Well-known tags the transform reads.
const (
	tagSOPClassUID                  = 0x00080016
	tagSOPInstanceUID               = 0x00080018
	tagStudyInstanceUID             = 0x0020000D
	tagSeriesInstanceUID            = 0x0020000E
	tagPatientName                  = 0x00100010
	tagPatientID                    = 0x00100020
	tagPatientIdentityRemoved       = 0x00120062
	tagDeidentificationMethod       = 0x00120063
	tagDeidentificationMethodCodeSq = 0x00120064
	tagBurnedInAnnotation           = 0x00280301
	tagLongitudinalTemporalModified = 0x00280303
	tagEncapsulatedDocument         = 0x00420011
	tagCodeValue                    = 0x00080100
	tagCodingSchemeDesignator       = 0x00080102
	tagCodeMeaning                  = 0x00080104
	// TagEncapsulatedDocument is exported for the policy's keep check.
	TagEncapsulatedDocument = tagEncapsulatedDocument
)

// mac is HMAC-SHA-256 of s under the profile's key.
func (p *Profile) mac(s string) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// NewUID is the UID that replaces uid: "2.25." and the decimal of the first
// 128 bits of HMAC-SHA-256(key, uid) (PS3.5 B.2). Padding is not part of
// the UID (PS3.5 9.1).
func (p *Profile) NewUID(uid string) string {
	uid = strings.TrimRight(uid, "\x00 ")
	if uid == "" {
		return ""
	}
	n := new(big.Int).SetBytes(p.mac(uid)[:16])
	return "2.25." + n.String()
}

// PatientPseudonym is the Patient ID and Patient's Name that replace
// patientID: the same for every instance of the patient under this key.
func (p *Profile) PatientPseudonym(patientID string) string {
	return "ANON-" + strings.ToUpper(hex.EncodeToString(p.mac(strings.TrimSpace(patientID))[:8]))
}

// DayShift is how many days the patient's dates move under
// retain-modified-dates: between 1 and 3650 days back, from the same HMAC
// as the pseudonym, so intervals between a patient's dates hold.
func (p *Profile) DayShift(patientID string) int {
	m := p.mac(strings.TrimSpace(patientID))
	return -(1 + int(binary.BigEndian.Uint16(m[8:10]))%3650)
}
