package proxy

import "github.com/dicomedge/dicomedge/association"

// abortSource is an aborted association's abort_source in the audit
// (docs/audit.md), the same on the answer and relay paths:
//   - "service-provider": the edge aborted it (abort_reason says why);
//   - "client" or "backend": that side's connection closed or failed;
//   - "client:<source>" or "backend:<source>": that side sent an A-ABORT,
//     whose PS3.8 9.3.8 source follows ("service-user", "service-provider").
type abortSource string

// abortReason is an aborted association's abort_reason in the audit:
//   - the PS3.8 9.3.8 reason of an A-ABORT carried through (e.g.
//     "reason-not-specified");
//   - "<side>:<reason>": the edge aborted because that side broke the
//     protocol, with the PS3.8 reason it was sent (e.g.
//     "client:unexpected-pdu-parameter");
//   - "idle-timeout", "shutdown", "connection-closed", "connection-error".
type abortReason string

const (
	sourceEdge abortSource = "service-provider"

	reasonIdle      abortReason = "idle-timeout"
	reasonShutdown  abortReason = "shutdown"
	reasonClosed    abortReason = "connection-closed"
	reasonConnError abortReason = "connection-error"
)

// peerAborted is the source of an A-ABORT side sent.
func peerAborted(side string, src association.AbortSource) abortSource {
	return abortSource(side + ":" + src.String())
}

// protocolReason is the reason of the edge's abort of side for a protocol
// error, with the A-ABORT reason side was sent.
func protocolReason(side string, r association.AbortReason) abortReason {
	return abortReason(side + ":" + r.String())
}

// endOutcome is how an association ended, for the audit record and log.
type endOutcome struct {
	released    bool
	abortSource abortSource
	abortReason abortReason
	detail      string // what the protocol violation was, if one ended it
	err         error
}

// logArgs appends how the association ended, leaving out what is empty.
func (o endOutcome) logArgs(args ...any) []any {
	if o.abortSource != "" {
		args = append(args, "abort_source", string(o.abortSource), "abort_reason", string(o.abortReason))
	}
	if o.detail != "" {
		args = append(args, "violation", o.detail)
	}
	if o.err != nil {
		args = append(args, "error", o.err)
	}
	return args
}
