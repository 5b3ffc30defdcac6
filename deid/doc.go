// Package deid de-identifies DICOM data sets as they stream past, by the
// Basic Application Level Confidentiality Profile of PS3.15 Annex E (Table
// E.1-1) and its options. A Transformer is fed a data set's bytes in any
// fragmentation (the PDVs of a C-STORE, or a Part 10 file's body) and
// gives the de-identified bytes; it holds the data set's header up to the
// verdict point (the first top-level element past Encapsulated Document
// (0042,0011)), bounded in bytes, and streams everything after it —
// Pixel Data included — in the fragments it came in. Replacements derive
// from an HMAC of the original under the profile's key, so no table is
// kept. It knows no sockets, files or policy syntax (docs/deidentify.md).
//
//go:generate go run ./internal/gen -table testdata/confidentiality_profile_attributes.json -out .
package deid
