package deid

// TableEntry is one row of PS3.15 Table E.1-1 as the profile holds it:
// Mask has zeros in the hex digits the table writes as x (50xx, 60xx).
type TableEntry struct {
	Tag, Mask   uint32
	Name, Basic string
}

// Table lists Table E.1-1 (without the private-attributes row), for
// `dicomedge deidentify --explain` and for tests that plant a value in
// every attribute it names.
func Table() []TableEntry {
	out := make([]TableEntry, len(profileTable))
	for i, r := range profileTable {
		out[i] = TableEntry{Tag: r.tag, Mask: r.mask, Name: r.name, Basic: r.basic}
	}
	return out
}

// VROf is tag's VR by the PS3.6 dictionary ("UN" for a tag it lacks).
func VROf(tag uint32) string { return lookupVR(tag).String() }
