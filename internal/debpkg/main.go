// Command debpkg builds the dicomedge Debian package from a built binary
// and the files under contrib/, with nfpm as a library (no packaging tool
// to download or install). scripts/package runs it:
//
//	go run ./internal/debpkg --binary dist/dicomedge --version 1.2.3 --out dist
//
// What goes where, with which owner and mode, is the table in layout();
// the maintainer scripts in contrib/debian create the dicomedge user and
// enable (not start) the service.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// options of one build.
type options struct {
	Root    string    // the repository (contrib/, docs/, README.md)
	Binary  string    // the dicomedge binary to package
	Version string    // Debian version, e.g. 1.2.3 or 0.0.0~git20261207.ba26495
	Arch    string    // Debian architecture, e.g. amd64
	Out     string    // directory for the .deb
	MTime   time.Time // every file's time, for a reproducible package
}

// debVersion: a Debian version without epoch or revision (a native
// package): it starts with a digit and holds only these characters.
var debVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

const (
	maintainer = "dicomedge maintainers <dicomedge@users.noreply.github.com>"
	homepage   = "https://github.com/dicomedge/dicomedge"
	unitSource = "contrib/dicomedge.service"
	binPath    = "/usr/bin/dicomedge"
	unitPath   = "/lib/systemd/system/dicomedge.service" // Debian 12 keeps units under /lib
	policyPath = "/etc/dicomedge/policy.hcl"
	// pristinePolicy is the packaged policy as shipped (not a conffile).
	pristinePolicy = "/usr/share/dicomedge/policy.hcl.dist"
	docDir         = "/usr/share/doc/dicomedge"
	description    = `TLS-first secure DICOM edge proxy
 dicomedge stands at a hospital's network perimeter between outside DICOM
 peers (remote modalities, clinics, teleradiology and AI vendors) and the
 PACS inside. Every connection is mutual TLS with a verified client
 certificate; every association request is checked against an HCL policy
 keyed on the certificate's identity and the AE titles; the edge answers
 C-ECHO itself or relays the association to a backend PACS, and writes a
 hash-chained audit trail.
 .
 The package installs the dicomedge.service systemd unit, enabled but not
 started: edit /etc/dicomedge/policy.hcl first.`
)

func main() {
	var o options
	flag.StringVar(&o.Root, "root", ".", "the repository's root directory")
	flag.StringVar(&o.Binary, "binary", "", "the dicomedge binary to package (required)")
	flag.StringVar(&o.Version, "version", "", "the package version, as the binary reports it (required)")
	flag.StringVar(&o.Arch, "arch", "amd64", "Debian architecture")
	flag.StringVar(&o.Out, "out", "dist", "directory for the .deb")
	flag.Parse()
	o.MTime = time.Now().UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err != nil {
			fatal(fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err))
		}
		o.MTime = time.Unix(sec, 0).UTC()
	}
	path, err := build(o)
	if err != nil {
		fatal(err)
	}
	fmt.Println(path)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "debpkg:", err)
	os.Exit(1)
}

// build writes the package and returns its path.
func build(o options) (string, error) {
	if o.Binary == "" || o.Version == "" {
		return "", errors.New("--binary and --version are required")
	}
	if !debVersion.MatchString(o.Version) {
		return "", fmt.Errorf("version %q is not a Debian version (a digit first, then letters, digits and . + ~)", o.Version)
	}
	stage, err := os.MkdirTemp("", "dicomedge-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	contents, err := layout(o, stage)
	if err != nil {
		return "", err
	}
	script := func(name string) string { return filepath.Join(o.Root, "contrib", "debian", name) }
	info := &nfpm.Info{
		Name:          "dicomedge",
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none", // the version as given: Debian's rules, not semver's
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   description,
		Homepage:      homepage,
		MTime:         o.MTime,
		Overridables: nfpm.Overridables{
			// adduser: the postinst makes the system user. The binary is
			// built without cgo: it loads no shared library (a PIE, only
			// the dynamic loader of libc6, which every system has).
			Depends:  []string{"adduser"},
			Suggests: []string{"dcmtk", "prometheus"},
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: script("postinst"),
				PreRemove:   script("prerm"),
				PostRemove:  script("postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.Out, fmt.Sprintf("dicomedge_%s_%s.deb", o.Version, o.Arch))
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("deb: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// layout is every file and directory of the package with its owner and
// mode; generated files (the unit for /usr/bin, the changelog) are written
// to stage.
func layout(o options, stage string) (files.Contents, error) {
	src := func(p string) string { return filepath.Join(o.Root, filepath.FromSlash(p)) }
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.MTime}}
	}
	dir := func(to, owner, group string) *files.Content {
		return &files.Content{Destination: to, Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Owner: owner, Group: group, Mode: 0o750, MTime: o.MTime}}
	}

	// The unit in contrib/ names /usr/local/bin, where a hand install puts
	// the binary; the package's is in /usr/bin.
	unit, err := os.ReadFile(src(unitSource))
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(unit, []byte("/usr/local/bin/dicomedge")) {
		return nil, fmt.Errorf("%s: no /usr/local/bin/dicomedge to point at %s", unitSource, binPath)
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/dicomedge"), []byte(binPath))
	// Enabled at install, yet not started until the site has edited the
	// policy: while /etc/dicomedge/policy.hcl is still the packaged one,
	// a start (at boot, say) is skipped as a condition not met, not failed.
	if !bytes.Contains(unit, []byte("\n[Service]\n")) {
		return nil, fmt.Errorf("%s: no [Service] section", unitSource)
	}
	unit = bytes.Replace(unit, []byte("\n[Service]\n"), []byte("\n[Service]\n"+
		"# Skipped, not failed, while the policy is still the packaged one: edit it first.\n"+
		"ExecCondition=/bin/sh -c '! cmp -s "+policyPath+" "+pristinePolicy+"'\n"), 1)
	stagedUnit := filepath.Join(stage, "dicomedge.service")
	if err := os.WriteFile(stagedUnit, unit, 0o644); err != nil {
		return nil, err
	}
	changelog := filepath.Join(stage, "changelog.gz")
	if err := writeChangelog(changelog, o.Version, o.MTime); err != nil {
		return nil, err
	}

	c := files.Contents{
		file(o.Binary, binPath, 0o755),
		file(stagedUnit, unitPath, 0o644),
		// The policy is the site's: a conffile dpkg never overwrites once
		// edited, readable by the service's group only (it names keys).
		{Source: src("contrib/debian/policy.hcl"), Destination: policyPath, Type: files.TypeConfigNoReplace,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "dicomedge", Mode: 0o640, MTime: o.MTime}},
		dir("/etc/dicomedge", "root", "dicomedge"),
		// The policy as shipped, for the unit's "not edited yet" condition.
		file(src("contrib/debian/policy.hcl"), pristinePolicy, 0o644),
		// What the service writes (the unit's ReadWritePaths).
		dir("/var/lib/dicomedge", "dicomedge", "dicomedge"),
		dir("/var/lib/dicomedge/audit", "dicomedge", "dicomedge"),
		dir("/var/lib/dicomedge/acme", "dicomedge", "dicomedge"),
		dir("/var/lib/dicomedge/spool", "dicomedge", "dicomedge"),
		file(src("contrib/debian/copyright"), docDir+"/copyright", 0o644),
		file(changelog, docDir+"/changelog.gz", 0o644),
		file(src("README.md"), docDir+"/README.md", 0o644),
		file(src("contrib/dicomedge-alerts.yml"), docDir+"/examples/dicomedge-alerts.yml", 0o644),
		file(src("contrib/haproxy.cfg"), docDir+"/examples/haproxy.cfg", 0o644),
		file(src("contrib/debian/lintian-overrides"), "/usr/share/lintian/overrides/dicomedge", 0o644),
	}
	docs, err := filepath.Glob(src("docs/*.md"))
	if err != nil {
		return nil, err
	}
	sort.Strings(docs)
	for _, d := range docs {
		c = append(c, file(d, docDir+"/docs/"+filepath.Base(d), 0o644))
	}
	return c, nil
}

// writeChangelog writes a native package's changelog.gz (Debian policy
// 12.7) with one entry for this build; gzip -9n's shape: no name, no time,
// so the package is reproducible.
func writeChangelog(path, version string, when time.Time) error {
	text := fmt.Sprintf("dicomedge (%s) unstable; urgency=medium\n\n"+
		"  * Built from the dicomedge repository; its history is the git log.\n\n"+
		" -- %s  %s\n", version, maintainer, when.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(zw, text); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
