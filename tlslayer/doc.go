// Package tlslayer owns the edge's TLS: the listener's tls.Config (certificates
// from files with hot reload, or from ACME through certmagic), the client CA
// pools and CRLs, the DICOM PS3.15 Annex B (BCP 195) profiles, and turning a
// verified client chain into an Identity. It knows nothing of DICOM.
//
// Use: New loads a Config; tls.NewListener(ln, layer.ServerConfig()) (or
// tls.Server per connection); Handshake(ctx-with-ARTIM, conn) returns the
// client's Identity or a *HandshakeError whose Reason names the refusal;
// Reload on SIGHUP. Everything a handshake reads is one immutable state
// swapped atomically, so reloads never disturb live connections.
package tlslayer
