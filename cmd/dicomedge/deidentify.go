package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/text/transform"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/deid"
)

type deidentifyFlags struct {
	config, profile, out string
	explain              bool
}

func newDeidentifyCmd() *cobra.Command {
	var f deidentifyFlags
	cmd := &cobra.Command{
		Use:   "deidentify --profile NAME [--explain] [--out DIR] FILE...",
		Short: "Apply a deidentify profile to DICOM Part 10 files as the relay would",
		Long: "Reads each DICOM Part 10 FILE, de-identifies its data set with the policy's deidentify block\n" +
			"--profile exactly as a de-identifying relay rule would (docs/deidentify.md), and with --out\n" +
			"writes it to DIR as <new SOP Instance UID>.dcm, its File Meta Information following the new\n" +
			"SOP Instance UID. Without --out nothing is written: the files are checked and, with --explain,\n" +
			"each attribute's action and the reason for it are printed. Deflated and big endian files are\n" +
			"refused, as are instances the profile refuses (burned-in annotation, encapsulated documents,\n" +
			"values over the bounds, unreadable data). Exit status 0 when every file passed, 1 when a file\n" +
			"was refused, 2 for an invalid configuration or an unknown profile.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDeidentify(cmd, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "policy.hcl", "configuration file holding the deidentify block")
	fl.StringVar(&f.profile, "profile", "", "name of the deidentify block to apply (required)")
	fl.BoolVar(&f.explain, "explain", false, "print each attribute's action and why")
	fl.StringVar(&f.out, "out", "", "directory to write the de-identified files to (default: write nothing)")
	_ = cmd.MarkFlagRequired("profile")
	return cmd
}

func runDeidentify(cmd *cobra.Command, f *deidentifyFlags, files []string) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	cfg, _, err := loadConfig(errOut, f.config)
	if err != nil {
		return err
	}
	d := cfg.Deidentify[f.profile]
	if d == nil || d.Profile == nil {
		names := make([]string, 0, len(cfg.Deidentify))
		for n := range cfg.Deidentify {
			names = append(names, n)
		}
		slices.Sort(names)
		known := "none is defined"
		if len(names) > 0 {
			known = "defined: " + strings.Join(names, ", ")
		}
		return withExit(2, fmt.Errorf("--profile %q: no deidentify block of that name in %s; %s", f.profile, f.config, known))
	}
	if f.out != "" {
		if st, err := os.Stat(f.out); err != nil || !st.IsDir() {
			return withExit(2, fmt.Errorf("--out %s: not a directory", f.out))
		}
	}
	refused := 0
	for _, in := range files {
		r, err := deidentifyFile(d.Profile, in, f.out, out, f.explain)
		if err != nil {
			refused++
			fmt.Fprintf(errOut, "%s: refused: %s\n", printable(in), printable(refusalText(err)))
			continue
		}
		where := "not written (no --out)"
		if r.path != "" {
			where = "written to " + r.path
		}
		// Under retain-uids the UIDs are the file's own: escaped like any
		// value read from a file.
		fmt.Fprintf(out, "%s: de-identified with %q, %s: sop_instance %s, study %s, series %s, patient %s\n",
			printable(in), d.Name, printable(where), printable(r.res.SOPInstanceUID), printable(r.res.StudyUID), printable(r.res.SeriesUID), r.res.Pseudonym)
	}
	if refused > 0 {
		return withExit(1, fmt.Errorf("%s of %d refused", plural(refused, "file"), len(files)))
	}
	return nil
}

// refusalText names why a file was refused: the transform's reason word
// (burned-in-annotation, encapsulated-document, over-bound,
// malformed-data-set, transfer-syntax) or unparseable.
func refusalText(err error) string {
	var re *deid.RefusedError
	if errors.As(err, &re) {
		return re.Error()
	}
	var fm *deid.FileMetaError
	if errors.As(err, &fm) {
		return "unparseable: " + fm.Error()
	}
	return err.Error()
}

type deidentified struct {
	res  deid.Result
	path string // the file written, "" without --out
}

// deidentifyFile streams one Part 10 file through the profile: the File
// Meta Information is read (bounded) and rewritten, the data set goes
// through the transform in pieces, so pixel data is never held whole. The
// output is written to a temporary file in outDir, synced and renamed into
// place only once the whole instance went through: a refused file leaves
// nothing behind.
func deidentifyFile(p *deid.Profile, in, outDir string, stdout io.Writer, explain bool) (deidentified, error) {
	var r deidentified
	src, err := os.Open(in)
	if err != nil {
		return r, err
	}
	defer src.Close()
	br := bufio.NewReaderSize(src, 64<<10)
	meta, err := deid.ReadFileMeta(br)
	if err != nil {
		return r, err
	}
	ts := meta.TransferSyntax()
	t, err := deid.New(p, ts)
	if err != nil {
		return r, err
	}
	var lines []string
	if explain {
		t.Explain(func(e deid.Explanation) {
			lines = append(lines, explainLine(e))
		})
	}
	tr := transform.NewReader(br, t)
	// Nothing comes out before the verdict point; once the first bytes
	// do, the new UIDs are known and the File Meta can be written first.
	buf := make([]byte, 64<<10)
	var n int
	for n == 0 && err == nil {
		n, err = tr.Read(buf)
	}
	if err != nil && err != io.EOF {
		return r, err
	}
	r.res = t.Result()
	sop := r.res.SOPInstanceUID
	if sop == "" {
		sop = t.MapUID(meta.MediaStorageSOPInstanceUID())
	}
	if meta.MediaStorageSOPClassUID() == "" && r.res.SOPClassUID != "" {
		// Type 1 in the File Meta (PS3.10 7.1): the data set's SOP Class UID
		// stands in for a writer that left it out.
		meta.Elements = append(meta.Elements, deid.MetaElement{Tag: 0x00020002, VR: "UI", Value: []byte(r.res.SOPClassUID)})
	}
	head, err := deid.EncodeFileMeta(meta, sop, association.ImplementationClassUID, association.ImplementationVersionName)
	if err != nil {
		return r, &deid.RefusedError{Reason: "malformed-data-set", Detail: "neither the data set nor the File Meta Information has a SOP Instance UID"}
	}
	r.res.SOPInstanceUID = sop

	var dst io.Writer = io.Discard
	var tmp *os.File
	if outDir != "" {
		if tmp, err = os.CreateTemp(outDir, ".deidentify-*.tmp"); err != nil {
			return r, err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		dst = tmp
	}
	if _, err := dst.Write(head); err != nil {
		return r, err
	}
	if _, err := dst.Write(buf[:n]); err != nil {
		return r, err
	}
	if _, err := io.CopyBuffer(dst, tr, buf); err != nil {
		return r, err
	}
	if explain {
		fmt.Fprintf(stdout, "%s:\n", printable(in))
		for _, l := range lines {
			fmt.Fprintln(stdout, l)
		}
		fmt.Fprintln(stdout, "  added: (0012,0062) PatientIdentityRemoved YES, (0012,0063) DeidentificationMethod, (0012,0064) DeidentificationMethodCodeSequence (CID 7050: the profile and each option), (0028,0303) LongitudinalTemporalInformationModified")
		fmt.Fprintln(stdout, "  file meta: (0002,0003) MediaStorageSOPInstanceUID = the new SOP Instance UID; (0002,0012)/(0002,0013) name dicomedge; sending, receiving and source AE titles and private information left out")
	}
	if tmp == nil {
		return r, nil
	}
	name := filepath.Join(outDir, safeFileName(sop)+".dcm")
	if err := tmp.Sync(); err != nil {
		return r, err
	}
	if err := tmp.Close(); err != nil {
		return r, err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return r, err
	}
	tmp = nil
	if err := syncDir(outDir); err != nil {
		return r, err
	}
	r.path = name
	return r, nil
}

// explainLine is one attribute of --explain, indented by nesting as
// dcmdump shows it.
func explainLine(e deid.Explanation) string {
	name := deid.Keyword(e.Tag)
	if name == "" {
		name = "?"
		if (e.Tag>>16)%2 == 1 {
			name = "(private)"
		}
	}
	return fmt.Sprintf("  %s%s %-40s %-13s %s", strings.Repeat(">", e.Depth), deid.FormatTag(e.Tag), name, e.Action, e.Why)
}

// safeFileName keeps a UID a plain file name whatever the data set held:
// the replaced UIDs are digits and dots, but a retained one came from the
// file.
func safeFileName(uid string) string {
	b := []byte(uid)
	for i, c := range b {
		if !(c >= '0' && c <= '9' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
