//go:build linux

package testpeer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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

// A port where a Go listener's accepted connection is in TIME_WAIT can be
// bound again by net.Listen (SO_REUSEADDR on both) but not by a peer that
// binds without it, as storescp and Orthanc do; FreePort's listener binds
// like such a peer, so it never picks that port.
func TestStrictListenRefusesTimeWaitPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	s.Close() // the side that closes first keeps the TIME_WAIT, on addr
	_, _ = c.Read(make([]byte, 1))
	c.Close()
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("this kernel refuses even net.Listen on %s: %v", addr, err)
	}
	l2.Close()
	l3, err := strictListen.Listen(context.Background(), "tcp", addr)
	if err == nil {
		l3.Close()
		t.Fatalf("bound %s without SO_REUSEADDR while it has a connection in TIME_WAIT", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen %s: %v, want EADDRINUSE", addr, err)
	}
}
