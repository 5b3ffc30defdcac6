package policy

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/dicomedge/dicomedge/deid"
)

// DeidentifyKeyFiles lists the key_file of every deidentify block of the
// configuration at path, resolved against its directory as the loader
// resolves it. Only the file's syntax is read, so it answers for a file
// that does not load yet because a key is missing (serve --dev creates
// them before loading).
func DeidentifyKeyFiles(path string) ([]string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, b := range body.Blocks {
		if b.Type != "deidentify" {
			continue
		}
		a := b.Body.Attributes["key_file"]
		if a == nil {
			continue
		}
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String || v.AsString() == "" {
			continue
		}
		name := v.AsString()
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		out = append(out, name)
	}
	return out, nil
}

// CreateKeyFile writes a new de-identification key of deid.MinKeyLen
// random bytes to path, mode 0600, when no file is there; it never
// replaces one, since a new key gives every patient new pseudonyms and
// every study new UIDs (docs/deidentify.md). The key is written to a
// temporary name, synced, and linked into place, which fails if the name
// exists: a concurrent creator never sees a partial key. Missing parent
// directories are created 0700.
func CreateKeyFile(path string) (created bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	key := make([]byte, deid.MinKeyLen)
	if _, err := rand.Read(key); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, ".deid-key-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("key file %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return true, err
	}
	defer d.Close()
	return true, d.Sync()
}

// CreateDevKeys creates the key file of every deidentify block of the
// configuration at path that has none yet (CreateKeyFile), for `serve
// --dev`; it returns the files it created.
func CreateDevKeys(path string) ([]string, error) {
	files, err := DeidentifyKeyFiles(path)
	if err != nil {
		return nil, err
	}
	var created []string
	for _, f := range files {
		ok, err := CreateKeyFile(f)
		if err != nil {
			return created, err
		}
		if ok {
			created = append(created, f)
		}
	}
	return created, nil
}
