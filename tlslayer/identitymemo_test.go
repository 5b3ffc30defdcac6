package tlslayer

import (
	"crypto/x509/pkix"
	"reflect"
	"testing"
)

// The memo gives what IdentityFromCertificate gives, and each caller its
// own slices.
func TestStateIdentityMemo(t *testing.T) {
	leaf := selfSigned(t, pkix.Name{CommonName: "modality-a", Organization: []string{"Clinic"}}, []string{"modality-a.example"})
	st := &state{}
	want := IdentityFromCertificate(leaf)
	first, second := st.identity(leaf), st.identity(leaf)
	if !reflect.DeepEqual(first, want) || !reflect.DeepEqual(second, want) {
		t.Fatalf("memo gives %+v and %+v, want %+v", first, second, want)
	}
	if len(st.ids.m) != 1 {
		t.Fatalf("memo holds %d identities after two of one leaf", len(st.ids.m))
	}
	first.DNS[0] = "changed.example"
	if st.identity(leaf).DNS[0] != "modality-a.example" {
		t.Error("a caller's change reached the memo")
	}
	before := &state{cfg: Config{VerifyEachHandshake: true}}
	if before.identity(leaf); len(before.ids.m) != 0 {
		t.Error("the benchmark's before keeps a memo")
	}
}
