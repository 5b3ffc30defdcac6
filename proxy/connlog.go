package proxy

import (
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// connLog is a connection's logger: the server's, with the connection's
// fields (conn, listener, remote, client_cn, AE titles, backend). It is
// built only when the connection logs a line at a level in force: most
// associations log nothing below info, and building a logger for each
// field as it became known cost an allocation of every field so far, four
// times per association.
//
// with is called while one goroutine owns the connection (before the
// relay's pumps start); the lines may come from both pumps at once, which
// at worst build the same logger twice.
type connLog struct {
	base  hclog.Logger
	args  []any
	built atomic.Pointer[hclog.Logger]
	eager bool // build at each with, as before (the benchmark's before)
}

func newConnLog(base hclog.Logger, eager bool, args ...any) *connLog {
	l := &connLog{base: base, args: args, eager: eager}
	if eager {
		lg := base.With(args...)
		l.built.Store(&lg)
	}
	return l
}

// with adds fields to every line the connection logs from now on.
func (l *connLog) with(args ...any) {
	l.args = append(l.args, args...)
	if l.eager {
		lg := (*l.built.Load()).With(args...)
		l.built.Store(&lg)
		return
	}
	l.built.Store(nil)
}

func (l *connLog) logger() hclog.Logger {
	if lg := l.built.Load(); lg != nil {
		return *lg
	}
	lg := l.base.With(l.args...)
	l.built.Store(&lg)
	return lg
}

func (l *connLog) Trace(msg string, args ...any) {
	if l.base.IsTrace() {
		l.logger().Trace(msg, args...)
	}
}

func (l *connLog) Debug(msg string, args ...any) {
	if l.base.IsDebug() {
		l.logger().Debug(msg, args...)
	}
}

func (l *connLog) Info(msg string, args ...any) {
	if l.base.IsInfo() {
		l.logger().Info(msg, args...)
	}
}

func (l *connLog) Warn(msg string, args ...any) {
	if l.base.IsWarn() {
		l.logger().Warn(msg, args...)
	}
}

func (l *connLog) Error(msg string, args ...any) {
	if l.base.IsError() {
		l.logger().Error(msg, args...)
	}
}

func (l *connLog) IsTrace() bool { return l.base.IsTrace() }
