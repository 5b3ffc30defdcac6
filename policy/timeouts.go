package policy

import "time"

// Timings the edge applies that policy.hcl does not set (docs/limits.md).
const (
	// BackendDialTimeout bounds connecting to a backend, TLS handshake
	// included (and never beyond the client's ARTIM deadline).
	BackendDialTimeout = 10 * time.Second
	// PeerCloseWait is how long the edge waits for a peer to close after
	// A-ASSOCIATE-RJ, A-ABORT or A-RELEASE-RP, which PS3.8 leaves to the
	// peer (ARTIM, Sta13), when artim_timeout is not shorter.
	PeerCloseWait = 2 * time.Second
	// FinalWriteTimeout bounds writing a final PDU (A-ASSOCIATE-RJ,
	// A-ABORT) to a peer that may have stopped reading.
	FinalWriteTimeout = 2 * time.Second

	// The audit trail's forwarding to audit.syslog's collector (RFC 5425),
	// docs/audit.md. SyslogPoll is how often the trail is read for new
	// records; a record counts as delivered once its connection stayed up
	// SyslogConfirmAfter after it was written (RFC 5425 has no
	// acknowledgement).
	SyslogPoll         = 100 * time.Millisecond
	SyslogConfirmAfter = time.Second
	// SyslogDialTimeout bounds connecting to the collector, TLS included;
	// SyslogWriteTimeout one write to a collector that stopped reading.
	SyslogDialTimeout  = 5 * time.Second
	SyslogWriteTimeout = 30 * time.Second
	// SyslogMaxBackoff caps the wait between reconnection attempts.
	SyslogMaxBackoff = 10 * time.Second
	// SyslogCloseTimeout bounds delivering the backlog at shutdown while
	// the collector is reachable.
	SyslogCloseTimeout = 5 * time.Second
)

// ARTIM is edge.artim_timeout, DefaultARTIMTimeout when unset (an Edge
// not built by Load).
func (e *Edge) ARTIM() time.Duration { return orDefault(e.ARTIMTimeout, DefaultARTIMTimeout) }

// Idle is edge.idle_timeout, DefaultIdleTimeout when unset.
func (e *Edge) Idle() time.Duration { return orDefault(e.IdleTimeout, DefaultIdleTimeout) }

// Drain is edge.drain_timeout, DefaultDrainTimeout when unset.
func (e *Edge) Drain() time.Duration { return orDefault(e.DrainTimeout, DefaultDrainTimeout) }

// PeerCloseWait is how long to wait for a peer to close: PeerCloseWait,
// or the ARTIM timeout when that is shorter.
func (e *Edge) PeerCloseWait() time.Duration { return min(PeerCloseWait, e.ARTIM()) }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
