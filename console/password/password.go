// Package password makes and checks the password hashes of console users
// (`dicomedge admin passwd`, the policy's admin.console.user blocks): argon2id
// in the PHC string format ($argon2id$v=19$m=65536,t=3,p=4$salt$hash, as the
// reference implementation and libsodium write it), and bcrypt ($2a$, $2b$,
// $2y$) for hashes made by other tools. It is a leaf: the policy loader uses
// it to check a hash's form, the console to verify a login.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// The parameters Hash uses: RFC 9106 4's second recommended option
// (t=3, 64 MiB, p=4), for machines where 2 GiB per hash is too much.
const (
	Time    = 3
	Memory  = 64 * 1024 // KiB
	Threads = 4
	SaltLen = 16
	KeyLen  = 32
)

// Bounds on what a hash in the policy may ask for, so that a typo (or a
// hostile policy edit) cannot make each login attempt take gigabytes or
// minutes: the console verifies hashes while the edge relays.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 16
	maxThreads = 64
	maxKeyLen  = 128
)

// MaxPasswordLen bounds what a login form may submit (bytes): argon2 and
// bcrypt accept any length, and nobody types more.
const MaxPasswordLen = 1024

// Hash returns the argon2id PHC string of pw with a fresh random salt.
func Hash(pw string) (string, error) {
	if len(pw) > MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	}
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, Time, Memory, Threads, KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, Memory, Time, Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Hashed is a parsed hash, ready to verify passwords against.
type Hashed struct {
	bcrypt []byte // a bcrypt hash, or nil
	// argon2id
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// Parse checks the form and parameters of a hash.
func Parse(s string) (*Hashed, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return nil, fmt.Errorf("not a bcrypt hash: %v", err)
		}
		return &Hashed{bcrypt: []byte(s)}, nil
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("argon2i and argon2d hashes are not accepted; make an argon2id hash with `dicomedge admin passwd`")
	}
	return nil, errors.New("not an argon2id ($argon2id$...) or bcrypt ($2b$...) hash; make one with `dicomedge admin passwd`")
}

func parseArgon2id(s string) (*Hashed, error) {
	// $argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>
	parts := strings.Split(s, "$")
	if len(parts) != 6 {
		return nil, errors.New("an argon2id hash has the form $argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("argon2id version %q: only v=%d is supported", parts[2], argon2.Version)
	}
	h := &Hashed{}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return nil, fmt.Errorf("argon2id parameters %q: want m=<KiB>,t=<passes>,p=<threads>", parts[3])
	}
	for i, want := range []string{"m", "t", "p"} {
		k, v, ok := strings.Cut(params[i], "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || k != want || err != nil || n == 0 {
			return nil, fmt.Errorf("argon2id parameters %q: want m=<KiB>,t=<passes>,p=<threads>", parts[3])
		}
		switch want {
		case "m":
			h.memory = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n > maxThreads {
				return nil, fmt.Errorf("argon2id p=%d: at most %d", n, maxThreads)
			}
			h.threads = uint8(n)
		}
	}
	if h.memory > maxMemory || h.time > maxTime {
		return nil, fmt.Errorf("argon2id m=%d,t=%d: at most m=%d (1 GiB) and t=%d, so that a login cannot exhaust the edge", h.memory, h.time, maxMemory, maxTime)
	}
	if h.memory < 8*uint32(h.threads) {
		return nil, fmt.Errorf("argon2id m=%d: at least 8 KiB per thread (p=%d)", h.memory, h.threads)
	}
	var err error
	b64 := base64.RawStdEncoding
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return nil, errors.New("argon2id salt: want at least 8 bytes of unpadded base64")
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > maxKeyLen {
		return nil, fmt.Errorf("argon2id hash: want 16 to %d bytes of unpadded base64", maxKeyLen)
	}
	return h, nil
}

// Verify reports whether pw is the password h was made from, in time that
// does not depend on how much of it matched.
func (h *Hashed) Verify(pw string) bool {
	if len(pw) > MaxPasswordLen {
		return false
	}
	if h.bcrypt != nil {
		return bcrypt.CompareHashAndPassword(h.bcrypt, []byte(pw)) == nil
	}
	key := argon2.IDKey([]byte(pw), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}
