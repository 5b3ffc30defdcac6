package audit

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFollowAtPositions: every position FollowAt gives reads back the very
// line it gave, across a rotation, and a console record keeps its user.
func TestFollowAtPositions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(Config{File: file, RotateSize: 600})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		w.Log(Event{Event: EventConsoleLogin, User: "pacs-admin", Remote: "127.0.0.1:5000", Detail: "password"})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(Files(file)); n < 3 {
		t.Fatalf("want a rotated log, have %d files", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := 0
	err = FollowAt(ctx, file, Filter{}, 10*time.Millisecond, func(e Event, line []byte, p Position) error {
		if e.User != "pacs-admin" || e.Event != EventConsoleLogin {
			t.Errorf("seq %d: user %q event %q", e.Seq, e.User, e.Event)
		}
		fh, err := os.Open(p.File)
		if err != nil {
			return err
		}
		defer fh.Close()
		got := make([]byte, len(line))
		if _, err := fh.ReadAt(got, p.Offset); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if string(got) != string(line) {
			t.Errorf("seq %d at %+v reads %q", e.Seq, p, got)
		}
		if seen++; seen == 12 {
			cancel()
		}
		return nil
	})
	if err != nil || seen != 12 {
		t.Fatalf("FollowAt: %v, %d records", err, seen)
	}
}
