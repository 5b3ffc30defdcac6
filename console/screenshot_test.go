package console

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
)

// screenshotDocs, when set, writes the overview of a generated day of
// traffic to docs/console-overview.png (README.md's picture).
var screenshotDocs = flag.Bool("console-screenshot", false, "write docs/console-overview.png")

// TestOverviewOfADay renders the overview of a generated day of traffic (20,000
// records, four associations open) in headless chromium and checks what it
// draws: both charts with bars, the open associations, the last refusals.
// The full-page screenshot is saved in the test's output directory.
func TestOverviewOfADay(t *testing.T) {
	testpeer.Require(t, "chromium")
	dir := t.TempDir()
	end := time.Now().UTC()
	file := genLog(t, dir, 20_000, end, 0)
	cfg := consolePolicy(t, dir, "")
	withLog := *cfg
	withLog.Audit.File = file
	withLog.Filename = "/etc/dicomedge/policy.hcl" // as a site would have it, for the picture
	since := func(d time.Duration) time.Time { return time.Now().Add(-d) }
	live := []proxy.OpenAssociation{
		{Listener: "edge", Remote: "203.0.113.7:40122", Client: &audit.Client{CN: "ct1.clinic-a.example.org"}, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS",
			Rule: "clinic-a", Action: "relay", Backend: "pacs", BytesIn: 734 << 20, BytesOut: 41 << 10, Since: since(3 * time.Minute)},
		{Listener: "edge", Remote: "198.51.100.23:51000", Client: &audit.Client{CN: "mr2.clinic-b.example.org"}, CallingAE: "CLINB_MR2", CalledAE: "MAINPACS",
			Rule: "clinic-b", Action: "relay", Backend: "pacs", BytesIn: 96 << 20, BytesOut: 12 << 10, Since: since(48 * time.Second)},
		{Listener: "inside", Remote: "10.0.0.5:1044", CallingAE: "MAINPACS", CalledAE: "CLINA_WS1",
			Rule: "pacs-to-clinic-a", Action: "relay", Backend: "clinic-a-ws1", BytesIn: 210 << 20, BytesOut: 8 << 10, Since: since(11 * time.Minute)},
		{Listener: "edge", Remote: "192.0.2.40:33010", Client: &audit.Client{CN: "us3.clinic-c.example.org"}, CallingAE: "CLINC_US3", CalledAE: "DICOMEDGE",
			Rule: "echo", Action: "answer", BytesIn: 300, BytesOut: 290, Since: since(2 * time.Second)},
	}
	tc := &testConsole{}
	con, err := New(Options{Config: func() *policy.Config { return &withLog }, AuditFile: file, Live: func() []proxy.OpenAssociation { return live }})
	if err != nil {
		t.Fatal(err)
	}
	con.AddAction(Action{Name: "reload", Label: "Reload the policy", Description: "as SIGHUP: an invalid policy is refused and the old one stays"})
	ctx0, cancel0 := context.WithCancel(context.Background())
	defer cancel0()
	go func() { _ = con.Run(ctx0) }()
	for !con.Index().CaughtUp() {
		time.Sleep(10 * time.Millisecond)
	}
	tc.Console = con
	srv := startHTTP(t, con)

	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelC := chromedp.NewContext(actx)
	defer cancelC()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	step, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	err = chromedp.Do(step,
		chromedp.Navigate(srv+"/console/login"),
		chromedp.WaitVisible(chromedp.CSS(`#login`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), "op"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "op-pw"),
		chromedp.Click(chromedp.CSS(`#login button`)),
		chromedp.WaitVisible(chromedp.CSS(`#open`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	open, err := chromedp.Run(step, chromedp.Text(chromedp.CSS(`#open`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CLINA_CT1 → MAINPACS", "734.0 MiB", "MAINPACS → CLINA_WS1", "clinic-a-ws1"} {
		if !strings.Contains(open, want) {
			t.Errorf("open associations lack %q:\n%s", want, open)
		}
	}
	bars, err := chromedp.Run(step, chromedp.Nodes(chromedp.CSSAll(`svg.chart rect`)))
	if err != nil || len(bars) < 2*200 {
		t.Errorf("the charts have %d bars (%v); a day of traffic fills most of 2×288", len(bars), err)
	}
	refusals, err := chromedp.Run(step, chromedp.Text(chromedp.CSS(`#refusals`)))
	if err != nil || !strings.Contains(refusals, "calling-ae-not-recognized") {
		t.Errorf("last refusals: %q %v", refusals, err)
	}
	png, err := chromedp.Run(step, chromedp.FullScreenshot(100)) // quality 100 gives a PNG, less a JPEG
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "overview-day.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if *screenshotDocs {
		if err := os.WriteFile(filepath.Join("..", "docs", "console-overview.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
