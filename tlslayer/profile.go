package tlslayer

import (
	"crypto/tls"
	"fmt"
)

// profile is one DICOM PS3.15 Annex B Secure Transport Connection Profile
// expressed in what crypto/tls lets a server configure.
//
// Honest limits of Go's crypto/tls, which apply to every profile:
//   - TLS 1.3 cipher suites are not configurable: Go always offers
//     TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 and
//     TLS_CHACHA20_POLY1305_SHA256, all of which every RFC 8996 profile permits.
//   - DHE (finite-field) key exchange, AES-CCM and Camellia suites are not
//     implemented, so the DHE_RSA suites of B.9–B.11 and the CCM/Camellia
//     suites of B.13 cannot be offered; the ECDHE suites of equal strength are.
//   - The server chooses among the mutually supported suites by Go's own
//     strength and hardware order (PreferServerCipherSuites is ignored since Go
//     1.18), which matches BCP 195's "server selects the strongest".
//   - Alerts: a revoked certificate is answered with bad_certificate, because
//     Go sends that alert for every VerifyPeerCertificate error.
type profile struct {
	name       string
	minVersion uint16
	maxVersion uint16
	suites     []uint16 // TLS 1.0–1.2 suites; see the limits above for 1.3
	curves     []tls.CurveID
	// Minimum client key sizes (0: no extra check beyond x509 verification).
	minRSABits, minECBits int
}

// ECDHE with AES-GCM: the suites RFC 9325 §4.2 recommends for TLS 1.2.
var rfc9325Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// Key-exchange groups of at least 256 bits (RFC 9325 §4.2.1 recommends
// x25519 and secp256r1; the ML-KEM hybrid is stronger still).
var strongCurves = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}

func lookupProfile(name string) (profile, error) {
	switch name {
	case "", ProfileBCP195RFC8996:
		// PS3.15 B.12 "BCP 195 RFC 8996, 9325 TLS Secure Transport Connection
		// Profile": servers and clients shall support TLS 1.2 and may support
		// TLS 1.3, servers prefer 1.3 (Go does); RFC 8996 forbids TLS 1.0/1.1
		// and RFC 9325 §4.2 gives the ECDHE+AEAD suites. No fallback: nothing
		// below TLS 1.2 is ever negotiated.
		return profile{name: ProfileBCP195RFC8996, minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13,
			suites: rfc9325Suites, curves: strongCurves}, nil
	case ProfileBCP195RFC8996Modified:
		// PS3.15 B.13 "Modified BCP 195 RFC 8996, 9325": as B.12, but only the
		// listed algorithms are permitted: ECDHE key exchange of 256 bits or
		// more, AES-GCM / ChaCha20-Poly1305 (CCM and Camellia are listed too
		// but Go lacks them), RSA keys of 2048 bits or more and ECDSA keys of
		// 256 bits or more, SHA-256 or better (x509 already refuses SHA-1).
		return profile{name: ProfileBCP195RFC8996Modified, minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13,
			suites: append(append([]uint16(nil), rfc9325Suites...),
				tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
				tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
			curves: strongCurves, minRSABits: 2048, minECBits: 256}, nil
	case ProfileBCP195ND:
		// PS3.15 B.10 "Non-Downgrading BCP 195": implementations shall not
		// negotiate TLS 1.1 or 1.0; the required suites are ECDHE_RSA (and
		// DHE_RSA, absent in Go) with AES-GCM. "Additional cipher suites of
		// similar or greater cryptographic strength may be supported": the
		// ECDHE_ECDSA AES-GCM suites, so an ECDSA edge certificate works.
		return profile{name: ProfileBCP195ND, minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13,
			suites: rfc9325Suites, curves: strongCurves}, nil
	case ProfileBCP195:
		// PS3.15 B.9 "BCP 195 TLS Profile": comply with BCP 195 (RFC 7525),
		// which forbids SSL but only says TLS 1.0/1.1 SHOULD NOT be negotiated,
		// so this profile keeps them for old peers, with the AES and Basic
		// profiles' TLS_RSA_WITH_AES_128_CBC_SHA and TLS_RSA_WITH_3DES_EDE_CBC_SHA
		// as the backward-compatible suites after the ECDHE AES-GCM ones. Use
		// it only for legacy modalities that cannot do better.
		return profile{name: ProfileBCP195, minVersion: tls.VersionTLS10, maxVersion: tls.VersionTLS13,
			suites: append(append([]uint16(nil), rfc9325Suites...),
				tls.TLS_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA),
			curves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}}, nil
	case ProfileBCP195Extended:
		// PS3.15 B.11 "Extended BCP 195": TLS 1.2 only (not 1.0/1.1, and the
		// profile predates 1.3, which DCMTK also disables for it), the
		// ECDHE_RSA and ECDHE_ECDSA AES-GCM suites, ECDHE of 256 bits or more.
		return profile{name: ProfileBCP195Extended, minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS12,
			suites: rfc9325Suites, curves: strongCurves}, nil
	}
	return profile{}, fmt.Errorf("tls profile %q unknown (want %s, %s, %s, %s or %s)", name,
		ProfileBCP195RFC8996, ProfileBCP195RFC8996Modified, ProfileBCP195ND, ProfileBCP195, ProfileBCP195Extended)
}

// Profiles lists the profile names Config.Profile accepts, default first.
func Profiles() []string {
	return []string{ProfileBCP195RFC8996, ProfileBCP195RFC8996Modified, ProfileBCP195ND, ProfileBCP195, ProfileBCP195Extended}
}

// ValidateProfile reports whether name is a known profile ("" is the default).
func ValidateProfile(name string) error {
	_, err := lookupProfile(name)
	return err
}

// ClientConfig returns a tls.Config for the edge as a TLS client (towards a
// backend PACS) limited to the named profile's protocol versions, TLS 1.2
// cipher suites and key-exchange groups, the same ones the listener
// offers. The caller adds roots, certificates and ServerName.
func ClientConfig(name string) (*tls.Config, error) {
	p, err := lookupProfile(name)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:       p.minVersion,
		MaxVersion:       p.maxVersion,
		CipherSuites:     append([]uint16(nil), p.suites...),
		CurvePreferences: append([]tls.CurveID(nil), p.curves...),
	}, nil
}
