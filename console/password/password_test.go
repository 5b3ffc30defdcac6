package password

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=4$") {
		t.Fatalf("hash %q: not the argon2id PHC form with the documented parameters", h)
	}
	p, err := Parse(h)
	if err != nil {
		t.Fatalf("Parse(%q): %v", h, err)
	}
	if !p.Verify("correct horse battery staple") {
		t.Error("the right password does not verify")
	}
	for _, wrong := range []string{"", "correct horse battery stapl", "Correct horse battery staple", strings.Repeat("x", MaxPasswordLen+1)} {
		if p.Verify(wrong) {
			t.Errorf("wrong password %.20q verifies", wrong)
		}
	}
	h2, _ := Hash("correct horse battery staple")
	if h2 == h {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
}

func TestBcrypt(t *testing.T) {
	b, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Verify("s3cret") || p.Verify("s3cres") {
		t.Error("bcrypt verification wrong")
	}
}

func TestParseRefuses(t *testing.T) {
	salt, key := "c2FsdHNhbHRzYWx0", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
	cases := map[string]string{
		"empty":          "",
		"plain text":     "hunter2",
		"argon2i":        "$argon2i$v=19$m=65536,t=3,p=4$" + salt + "$" + key,
		"old version":    "$argon2id$v=16$m=65536,t=3,p=4$" + salt + "$" + key,
		"missing part":   "$argon2id$v=19$m=65536,t=3,p=4$" + salt,
		"order":          "$argon2id$v=19$t=3,m=65536,p=4$" + salt + "$" + key,
		"huge memory":    "$argon2id$v=19$m=4194304,t=3,p=4$" + salt + "$" + key,
		"many passes":    "$argon2id$v=19$m=65536,t=1000,p=4$" + salt + "$" + key,
		"zero threads":   "$argon2id$v=19$m=65536,t=3,p=0$" + salt + "$" + key,
		"short salt":     "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$" + key,
		"bad base64":     "$argon2id$v=19$m=65536,t=3,p=4$!!!!$" + key,
		"bcrypt garbage": "$2b$10$short",
	}
	for name, h := range cases {
		if _, err := Parse(h); err == nil {
			t.Errorf("%s: Parse(%q) accepted it", name, h)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5")
	f.Add("$2b$04$abcdefghijklmnopqrstuu5Yp7Qk0Y8K8uC3m5Qm5Y7Qk0Y8K8uC3")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		if h.bcrypt == nil && (h.memory > maxMemory || h.time > maxTime) {
			t.Fatalf("accepted parameters beyond the bounds: %q", s)
		}
		if h.bcrypt == nil && h.memory <= 1024 && h.time <= 2 {
			_ = h.Verify("x") // cheap enough to run
		}
	})
}
