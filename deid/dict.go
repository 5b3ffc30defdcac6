package deid

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// dictEntry is one attribute of the PS3.6 data dictionary; mask has 0 in
// the hex digits PS3.6 writes as x (repeating groups such as 60xx).
type dictEntry struct {
	tag, mask uint32
	vr        vr
	keyword   string
}

var byKeyword map[string]uint32

func init() {
	byKeyword = make(map[string]uint32, len(dictionary))
	for _, e := range dictionary {
		if e.mask == 0xffffffff && e.keyword != "" {
			byKeyword[e.keyword] = e.tag
		}
	}
}

// lookupVR is tag's VR by the dictionary (Implicit VR Little Endian
// carries none, PS3.5 7.1.3): UN for a tag it does not know.
func lookupVR(tag uint32) vr {
	i := sort.Search(len(dictionary), func(i int) bool { return dictionary[i].tag >= tag })
	if i < len(dictionary) && dictionary[i].tag == tag {
		return dictionary[i].vr
	}
	if tag&0xffff == 0 {
		return vrUL // group length (PS3.5 7.2)
	}
	if (tag>>16)%2 == 1 {
		// Private (PS3.5 7.8): the repeating groups are even (PS3.5 7.6),
		// so (6001,3000) is not Overlay Data.
		return vrUN
	}
	for _, e := range repeating {
		if tag&e.mask == e.tag {
			return e.vr
		}
	}
	return vrUN
}

// Keyword is tag's PS3.6 keyword, or "" for a tag the dictionary lacks.
func Keyword(tag uint32) string {
	i := sort.Search(len(dictionary), func(i int) bool { return dictionary[i].tag >= tag })
	if i < len(dictionary) && dictionary[i].tag == tag {
		return dictionary[i].keyword
	}
	for _, e := range repeating {
		if tag&e.mask == e.tag {
			return e.keyword
		}
	}
	return ""
}

var repeating = func() []dictEntry {
	var r []dictEntry
	for _, e := range dictionary {
		if e.mask != 0xffffffff {
			r = append(r, e)
		}
	}
	return r
}()

// ParseTag reads an attribute as a policy names it: "(0008,0060)",
// "0008,0060", "00080060" or a PS3.6 keyword ("Modality").
func ParseTag(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	if tag, ok := byKeyword[t]; ok {
		return tag, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(t, "("), ")")
	h = strings.ReplaceAll(h, ",", "")
	if len(h) == 8 && h != t || len(t) == 8 {
		if v, err := strconv.ParseUint(h, 16, 32); err == nil {
			return uint32(v), nil
		}
	}
	return 0, fmt.Errorf("%q is neither a tag like \"(0008,0060)\" nor a DICOM keyword", s)
}

// FormatTag writes tag as PS3.6 does, "(GGGG,EEEE)".
func FormatTag(tag uint32) string { return fmt.Sprintf("(%04X,%04X)", tag>>16, tag&0xffff) }
