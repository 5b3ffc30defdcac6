// Package tlslayer owns the edge's TLS: the listener's tls.Config (certificates
// from files with hot reload, or from ACME through certmagic), the client CA
// pools and CRLs, the DICOM PS3.15 Annex B (BCP 195) profiles, and turning a
// verified client chain into an Identity. It knows nothing of DICOM.
package tlslayer
