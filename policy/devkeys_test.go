package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// CreateDevKeys finds every deidentify block's key_file (relative ones
// against the policy's directory), creates the missing ones 0600 with 32
// random bytes, and never replaces one, even when several processes race.
func TestCreateDevKeys(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "abs.key")
	if err := os.WriteFile(abs, []byte("an existing key of thirty-two bytes!"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.hcl")
	src := `deidentify "a" {
  key_file = "var/keys/a.key"
}
deidentify "b" {
  key_file = "` + abs + `"
}
deidentify "c" {
  profile = "basic"
}
rule "r" {
  key_file = "not/a/deidentify/key"
}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := DeidentifyKeyFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "var", "keys", "a.key"), abs}
	if len(files) != 2 || files[0] != want[0] || files[1] != want[1] {
		t.Fatalf("DeidentifyKeyFiles = %q, want %q", files, want)
	}
	var wg sync.WaitGroup
	created := make([][]string, 8)
	for i := range created {
		wg.Go(func() {
			c, err := CreateDevKeys(path)
			if err != nil {
				t.Error(err)
			}
			created[i] = c
		})
	}
	wg.Wait()
	n := 0
	for _, c := range created {
		n += len(c)
	}
	if n != 1 {
		t.Errorf("created %q: want var/keys/a.key once", created)
	}
	st, err := os.Stat(want[0])
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Fatalf("a.key: %v, mode %v, %d bytes; want 0600, 32 bytes", err, st.Mode().Perm(), st.Size())
	}
	first, _ := os.ReadFile(want[0])
	if again, err := CreateDevKeys(path); err != nil || len(again) != 0 {
		t.Errorf("second run created %q (%v)", again, err)
	}
	if now, _ := os.ReadFile(want[0]); !bytes.Equal(now, first) {
		t.Error("the key was replaced")
	}
	if b, _ := os.ReadFile(abs); string(b) != "an existing key of thirty-two bytes!" {
		t.Error("an existing key was overwritten")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "var", "keys", ".deid-key-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
