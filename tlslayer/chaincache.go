package tlslayer

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// chainCache holds the client chains this state has verified, keyed by the
// fingerprints of the certificates as presented, in order: a modality that
// opens an association every few seconds presents the same chain each
// time, and building and checking its chain (a signature verification per
// certificate) was a tenth of the edge's CPU per association. A hit is
// used only while every certificate of its chains is within its validity,
// and only by the state that verified it (the CA pool it was verified
// against): a reload or a changed file makes a new state with an empty
// cache. CRLs, key usage and key size are checked on every handshake all
// the same (checkChain), so a certificate revoked since it was cached is
// refused at once.
type chainCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedChains
}

type cachedChains struct {
	chains      [][]*x509.Certificate
	from, until time.Time // the intersection of the chains' validity periods
}

// maxCachedChains bounds the cache: clients of one edge, each with its
// chain; past it an entry is dropped to make room.
const maxCachedChains = 4096

// chainKey is a digest of the presented certificates' fingerprints, in
// order.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		fp := sha256.Sum256(c.Raw)
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(fp[:])
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// verifyClient verifies the client's presented certificates (leaf first)
// against the state's client CAs as crypto/tls would (ClientAuth usage),
// from the cache when it holds them. A failure is the
// *tls.CertificateVerificationError crypto/tls itself returns, so the
// handshake failure is classified as before.
func (st *state) verifyClient(certs []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, nil // checkChain refuses: no client certificate
	}
	key := chainKey(certs)
	c := &st.chains
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && !now.Before(e.from) && !now.After(e.until) {
		return e.chains, nil
	}
	opts := x509.VerifyOptions{Roots: st.pool, CurrentTime: now, Intermediates: x509.NewCertPool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return nil, &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	e = cachedChains{chains: chains}
	for i, chain := range chains {
		for j, cert := range chain {
			if i == 0 && j == 0 || cert.NotBefore.After(e.from) {
				e.from = cert.NotBefore
			}
			if i == 0 && j == 0 || cert.NotAfter.Before(e.until) {
				e.until = cert.NotAfter
			}
		}
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[[sha256.Size]byte]cachedChains)
	}
	if len(c.m) >= maxCachedChains {
		for k := range c.m { // any one: map order is random
			delete(c.m, k)
			break
		}
	}
	c.m[key] = e
	c.mu.Unlock()
	return chains, nil
}

// cached says how many chains the cache holds.
func (st *state) cached() int {
	st.chains.mu.Lock()
	defer st.chains.mu.Unlock()
	return len(st.chains.m)
}

// identities holds the Identity of each leaf this state has described,
// keyed by its fingerprint: formatting a subject and an issuer (RFC 4514,
// through an ASN.1 parse of each) was 2% of the edge's CPU per
// association, for a modality that presents the same certificate every
// time. An Identity depends on the certificate's bytes alone; the map is
// bounded as the chain cache is and goes with the state.
type identities struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]Identity
}

// identity describes leaf, from the state's memo when it holds it.
func (st *state) identity(leaf *x509.Certificate) Identity {
	if st.cfg.VerifyEachHandshake {
		return IdentityFromCertificate(leaf) // the benchmark's before
	}
	key := sha256.Sum256(leaf.Raw)
	c := &st.ids
	c.mu.Lock()
	id, ok := c.m[key]
	c.mu.Unlock()
	if !ok {
		id = IdentityFromCertificate(leaf)
		c.mu.Lock()
		if c.m == nil {
			c.m = make(map[[sha256.Size]byte]Identity)
		}
		if len(c.m) >= maxCachedChains {
			for k := range c.m {
				delete(c.m, k)
				break
			}
		}
		c.m[key] = id
		c.mu.Unlock()
	}
	// The caller gets its own slices.
	id.DNS, id.URI, id.Email = slices.Clone(id.DNS), slices.Clone(id.URI), slices.Clone(id.Email)
	return id
}
