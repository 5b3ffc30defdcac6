//go:build linux

package testpeer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A peer started by a test binary that dies without its cleanups (as on a
// go test -timeout panic) is killed with it, not left holding its port.
func TestPeerDiesWithTestBinary(t *testing.T) {
	if os.Getenv("TESTPEER_ORPHAN_HELPER") != "" {
		p := Start(t, "sleep", "300")
		fmt.Println(p.Cmd.Process.Pid)
		os.Exit(3) // no cleanup runs
	}
	Require(t, "sleep")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerDiesWithTestBinary$")
	cmd.Env = append(os.Environ(), "TESTPEER_ORPHAN_HELPER=1")
	out, err := cmd.Output()
	if ExitCode(err) != 3 {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	pid := 0
	for sc.Scan() {
		if n, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			pid = n
		}
	}
	if pid == 0 {
		t.Fatalf("helper printed no pid:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// Gone, or a zombie waiting for init to reap it: either way dead.
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			_ = exec.Command("kill", "-9", strconv.Itoa(pid)).Run()
			t.Fatalf("peer %d outlived the test binary that started it: %s", pid, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
