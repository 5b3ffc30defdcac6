package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

// entry is one line of `dpkg-deb -c`: what the package's data archive
// holds, as dpkg will install it.
type entry struct{ mode, owner string }

// TestDebianPackage builds the package with scripts/package, as a release
// would, and checks it from the .deb itself: its control fields and
// maintainer scripts (dpkg-deb -I), every file's path, mode and owner
// (dpkg-deb -c), lintian, the unit (systemd-analyze verify), the packaged
// policy (dicomedge policy check, once its certificates exist) and the
// version the binary reports.
func TestDebianPackage(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "lintian", "systemd-analyze"} {
		testpeer.Require(t, tool)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx := testpeer.Context(t, 8*time.Minute)
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "package"))
	cmd.Env = append(os.Environ(), "OUT="+out)
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/package: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "dicomedge_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("scripts/package made %v in %s\n%s", debs, out, b)
	}
	deb := debs[0]
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// Control: name, version, architecture, dependencies, conffiles.
	field := func(f string) string { return strings.TrimSpace(run("dpkg-deb", "-f", deb, f)) }
	version := field("Version")
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(version) || !strings.Contains(filepath.Base(deb), "_"+version+"_") {
		t.Errorf("Version %q (file %s)", version, filepath.Base(deb))
	}
	if got := field("Package"); got != "dicomedge" {
		t.Errorf("Package %q", got)
	}
	if got := field("Architecture"); got == "" || strings.Contains(got, " ") {
		t.Errorf("Architecture %q", got)
	}
	if deps := field("Depends"); !regexp.MustCompile(`(^|, )adduser($|,| )`).MatchString(deps) {
		t.Errorf("Depends %q: the postinst runs adduser", deps)
	}
	info := run("dpkg-deb", "-I", deb)
	for _, want := range []string{" postinst ", " prerm ", " postrm ", " conffiles ", "Section: net", "Priority: optional", "Maintainer: "} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	control := t.TempDir()
	run("dpkg-deb", "-e", deb, control)
	if cf, _ := os.ReadFile(filepath.Join(control, "conffiles")); strings.TrimSpace(string(cf)) != "/etc/dicomedge/policy.hcl" {
		t.Errorf("conffiles = %q, want the policy alone", cf)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run("sh", "-n", filepath.Join(control, s))
	}
	postinst, _ := os.ReadFile(filepath.Join(control, "postinst"))
	for _, want := range []string{"adduser --system", "deb-systemd-helper enable dicomedge.service", "NOT started", "systemctl start dicomedge"} {
		if !strings.Contains(string(postinst), want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
	if strings.Contains(string(postinst), "deb-systemd-invoke start") {
		t.Error("postinst starts the service before its policy is edited")
	}

	// Data: every path with its mode and owner.
	files := map[string]entry{}
	sc := bufio.NewScanner(strings.NewReader(run("dpkg-deb", "-c", deb)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		files[strings.TrimPrefix(f[5], ".")] = entry{mode: f[0], owner: f[1]}
	}
	want := map[string]entry{
		"/usr/bin/dicomedge":                                     {"-rwxr-xr-x", "root/root"},
		"/lib/systemd/system/dicomedge.service":                  {"-rw-r--r--", "root/root"},
		"/etc/dicomedge/":                                        {"drwxr-x---", "root/dicomedge"},
		"/etc/dicomedge/policy.hcl":                              {"-rw-r-----", "root/dicomedge"},
		"/var/lib/dicomedge/":                                    {"drwxr-x---", "dicomedge/dicomedge"},
		"/var/lib/dicomedge/audit/":                              {"drwxr-x---", "dicomedge/dicomedge"},
		"/var/lib/dicomedge/acme/":                               {"drwxr-x---", "dicomedge/dicomedge"},
		"/var/lib/dicomedge/spool/":                              {"drwxr-x---", "dicomedge/dicomedge"},
		"/usr/share/doc/dicomedge/copyright":                     {"-rw-r--r--", "root/root"},
		"/usr/share/doc/dicomedge/changelog.gz":                  {"-rw-r--r--", "root/root"},
		"/usr/share/doc/dicomedge/docs/policy.md":                {"-rw-r--r--", "root/root"},
		"/usr/share/lintian/overrides/dicomedge":                 {"-rw-r--r--", "root/root"},
		"/usr/share/doc/dicomedge/examples/dicomedge-alerts.yml": {"-rw-r--r--", "root/root"},
		"/usr/share/dicomedge/policy.hcl.dist":                   {"-rw-r--r--", "root/root"},
	}
	for p, w := range want {
		if got, ok := files[p]; !ok {
			t.Errorf("the package has no %s", p)
		} else if got != w {
			t.Errorf("%s: %s %s, want %s %s", p, got.mode, got.owner, w.mode, w.owner)
		}
	}
	for p, e := range files {
		if !strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/etc/dicomedge") && !strings.HasPrefix(p, "/var/lib/dicomedge") &&
			!strings.HasPrefix(p, "/lib/systemd/system/") && p != "/" && p != "/etc/" && p != "/var/" && p != "/var/lib/" && p != "/lib/" && p != "/lib/systemd/" {
			t.Errorf("unexpected path %s", p)
		}
		if strings.HasPrefix(e.mode, "-") && (e.mode[5] == 'w' || e.mode[8] == 'w') {
			t.Errorf("%s is writable by group or others: %s", p, e.mode)
		}
	}

	// lintian: no error, and no warning but those the overrides file
	// names, each under a comment that says why.
	lint, _ := exec.CommandContext(ctx, "lintian", "--allow-root", "--tag-display-limit", "0", deb).CombinedOutput()
	for _, l := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
			t.Errorf("lintian: %s", l)
		}
	}
	overrides, err := os.ReadFile(filepath.Join(root, "contrib", "debian", "lintian-overrides"))
	if err != nil {
		t.Fatal(err)
	}
	reason := false // the paragraph so far has a comment
	for _, l := range strings.Split(string(overrides), "\n") {
		switch {
		case l == "":
			reason = false
		case strings.HasPrefix(l, "# "):
			reason = true
		case !reason:
			t.Errorf("lintian override %q has no reason in a comment above it", l)
		}
	}
	if testing.Verbose() || t.Failed() {
		t.Logf("lintian %s:\n%s", filepath.Base(deb), lint)
	}

	// The files as dpkg unpacks them.
	tree := t.TempDir()
	run("dpkg-deb", "-x", deb, tree)
	bin := filepath.Join(tree, "usr", "bin", "dicomedge")
	if v := run(bin, "version"); !strings.HasPrefix(v, "dicomedge "+version+"\n") {
		t.Errorf("the packaged binary reports %q, the package is %s", strings.SplitN(v, "\n", 2)[0], version)
	}

	// The packaged unit: systemd-analyze verify, with /usr/bin/dicomedge
	// pointing at the unpacked binary (it is not installed here).
	unit, err := os.ReadFile(filepath.Join(tree, "lib", "systemd", "system", "dicomedge.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"\nExecStart=/usr/bin/dicomedge serve --config /etc/dicomedge/policy.hcl", "\nExecReload=/bin/kill -HUP $MAINPID\n",
		"\nUser=dicomedge\n", "/var/lib/dicomedge/spool", "\nWantedBy=multi-user.target\n"} {
		if !strings.Contains(string(unit), w) {
			t.Errorf("the packaged unit lacks %q", strings.TrimSpace(w))
		}
	}
	if strings.Contains(string(unit), "/usr/local/") {
		t.Error("the packaged unit still names /usr/local")
	}
	// Enabled, yet not started until the policy is edited: the unit's
	// condition skips a start while the policy is the packaged one, and
	// lets it go once the site has changed it.
	cond := ""
	for _, line := range strings.Split(string(unit), "\n") {
		if c, ok := strings.CutPrefix(line, "ExecCondition=/bin/sh -c "); ok {
			cond = strings.Trim(c, "'")
		}
	}
	if cond == "" {
		t.Fatal("the packaged unit has no ExecCondition for an unedited policy")
	}
	inTree := strings.NewReplacer("/etc/", filepath.Join(tree, "etc")+"/", "/usr/share/", filepath.Join(tree, "usr", "share")+"/").Replace(cond)
	if err := exec.CommandContext(ctx, "sh", "-c", inTree).Run(); err == nil {
		t.Error("the unit's condition lets the service start on the packaged, unedited policy")
	}
	edited := filepath.Join(tree, "etc", "dicomedge", "policy.hcl")
	orig, _ := os.ReadFile(edited)
	if err := os.WriteFile(edited, append(orig, []byte("\n# edited by the site\n")...), 0o640); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "sh", "-c", inTree).CombinedOutput(); err != nil {
		t.Errorf("the unit's condition keeps the service from starting on an edited policy: %v\n%s", err, out)
	}
	if err := os.WriteFile(edited, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	vdir := t.TempDir()
	vunit := filepath.Join(vdir, "dicomedge.service")
	if err := os.WriteFile(vunit, []byte(strings.ReplaceAll(string(unit), "/usr/bin/dicomedge", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", vunit).CombinedOutput(); err != nil || strings.Contains(string(out), "dicomedge.service") {
		t.Errorf("systemd-analyze verify (packaged unit): %v\n%s", err, out)
	}

	// The packaged policy, in a directory of its own, once the certificate
	// files it names exist there.
	pdir := t.TempDir()
	pol, err := os.ReadFile(filepath.Join(tree, "etc", "dicomedge", "policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	pfile := filepath.Join(pdir, "policy.hcl")
	if err := os.WriteFile(pfile, pol, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, diags := policy.LoadFile(pfile)
	if diags.HasErrors() {
		t.Fatalf("the packaged policy does not load: %v", diags)
	}
	run(bin, "certs", "init", "--dir", filepath.Join(pdir, "certs"))
	mustCopy(t, filepath.Join(pdir, "certs", "ca.pem"), filepath.Join(pdir, "certs", "client-ca.pem"))
	named := append(append([]string{}, cfg.TLS.ClientCA...), cfg.TLS.CertFile, cfg.TLS.KeyFile)
	for _, f := range named {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the packaged policy names %s, which certs init did not make: %v", f, err)
		}
	}
	if out := run(bin, "policy", "check", "--config", pfile); !strings.Contains(out, "valid") {
		t.Errorf("policy check: %s", out)
	}
	if out, err := exec.CommandContext(ctx, bin, "policy", "fmt", "--check", pfile).CombinedOutput(); err != nil {
		t.Errorf("the packaged policy is not in canonical layout (policy fmt --check): %v\n%s", err, out)
	}
	if cfg.Audit.File != "/var/lib/dicomedge/audit/audit.jsonl" {
		t.Errorf("audit.file %q: the unit lets the service write /var/lib/dicomedge/audit only", cfg.Audit.File)
	}
}

func mustCopy(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A version dpkg would refuse, or a missing input, fails before anything
// is written.
func TestBuildRefusesBadInput(t *testing.T) {
	out := t.TempDir()
	for _, o := range []options{
		{Root: "../..", Binary: "x", Version: "v1.2.3", Arch: "amd64", Out: out},
		{Root: "../..", Binary: "x", Version: "1.2 3", Arch: "amd64", Out: out},
		{Root: "../..", Binary: "x", Version: "", Arch: "amd64", Out: out},
		{Root: "../..", Binary: "", Version: "1.2.3", Arch: "amd64", Out: out},
	} {
		if p, err := build(o); err == nil {
			t.Errorf("build(%+v) = %s, want an error", o, p)
		}
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
}

// maintainerScript runs contrib/debian/<name> with args against a
// throwaway tree instead of /: its /etc/dicomedge, /var/lib/dicomedge and
// /run/systemd paths are moved under root, and the commands that would
// change the system (adduser, chown, install, deb-systemd-helper ...) are stubs
// that log their arguments, one call a line, to the returned log. chmod,
// install and rm are the real ones. The user dicomedge exists.
func maintainerScript(t *testing.T, root, name string, args ...string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "contrib", "debian", name))
	if err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("/etc/dicomedge", filepath.Join(root, "etc", "dicomedge"),
		"/var/lib/dicomedge", filepath.Join(root, "var", "lib", "dicomedge"),
		"/run/systemd/system", filepath.Join(root, "run", "systemd", "system")).Replace(string(src))
	dir := t.TempDir()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "calls")
	for stub, rc := range map[string]int{"getent": 0, "adduser": 0, "addgroup": 0, "dpkg-statoverride": 1, "chown": 0, "install": 0,
		"deb-systemd-helper": 0, "deb-systemd-invoke": 0, "systemctl": 0} {
		body := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >>'%s'\nexit %d\n", stub, log, rc)
		if err := os.WriteFile(filepath.Join(bin, stub), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", append([]string{p}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	calls, _ := os.ReadFile(log)
	return string(calls)
}

// /var/lib/dicomedge belongs to the service user, so what stands in it
// may be that user's doing: the postinst, running as root, must not
// follow a symbolic link planted there (audit -> /etc would have handed
// /etc to the service), and must not undo on an upgrade the modes a site
// tightened.
func TestPostinstLeavesLinksAndSiteModesAlone(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "var", "lib", "dicomedge")
	victim := filepath.Join(root, "victim")
	for _, d := range []string{filepath.Join(state, "acme"), filepath.Join(state, "spool"), victim,
		filepath.Join(root, "etc", "dicomedge")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "dicomedge", "policy.hcl"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	audit := filepath.Join(state, "audit")
	if err := os.Symlink(victim, audit); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(state, "spool")
	if err := os.Chmod(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	// A first install (a reinstall after a purge keeps /var/lib/dicomedge),
	// then an upgrade.
	for _, args := range [][]string{{"configure", ""}, {"configure", "1.0.0"}} {
		calls := maintainerScript(t, root, "postinst", args...)
		for _, c := range strings.Split(calls, "\n") {
			if f := strings.Fields(c); len(f) > 1 && f[0] == "chown" && f[1] != "-h" && strings.Contains(c, audit) {
				t.Errorf("postinst %v follows the link %s: %s", args, audit, c)
			}
		}
		if fi, err := os.Stat(victim); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("postinst %v changed the mode of the link's target to %v", args, fi.Mode().Perm())
		}
		if fi, err := os.Stat(spool); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("postinst %v changed the site's spool mode 0700 to %v", args, fi.Mode().Perm())
		}
		if args[1] != "" && strings.Contains(calls, "chown") {
			t.Errorf("postinst %v (an upgrade) changes owners:\n%s", args, calls)
		}
	}
}

// `apt remove` masks the unit (postrm); installing the package again
// configures it with the old version as $2, like an upgrade: the postinst
// must lift that mask, or the service can never be started again.
func TestPostinstUnmasksAfterRemove(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{{"configure", ""}, {"configure", "1.0.0"}, {"abort-remove", ""}} {
		if err := os.MkdirAll(filepath.Join(root, "etc", "dicomedge"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "dicomedge", "policy.hcl"), nil, 0o640); err != nil {
			t.Fatal(err)
		}
		if calls := maintainerScript(t, root, "postinst", args...); !strings.Contains(calls, "deb-systemd-helper unmask dicomedge.service\n") {
			t.Errorf("postinst %v leaves the unit masked:\n%s", args, calls)
		}
	}
	if calls := maintainerScript(t, root, "postrm", "remove"); !strings.Contains(calls, "deb-systemd-helper mask dicomedge.service\n") {
		t.Errorf("postrm remove does not mask the unit (the check above is moot):\n%s", calls)
	}
}
