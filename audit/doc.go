// Package audit owns the audit trail: event types, the append-only,
// hash-chained JSON-lines writer behind a bounded queue, the reader used by
// `dicomedge audit` to filter, summarise and verify it, and the optional
// RFC 5425 syslog forwarder (JSON or DICOM PS3.15 A.5 ATNA XML).
//
// On disk: File holds the newest records; when it would exceed RotateSize it
// is renamed to File.N (N one more than the highest existing, so File.1 is
// the oldest) and the chain continues in a new File. File.head is an anchor
// (seq and hash of the last synced record) rewritten after every fsync, so
// that deleting records from the end or editing the last record is
// detected too. File.key is the HMAC key for patient IDs in "hash" mode.
//
// What the chain proves, honestly: it is unkeyed (plain SHA-256) and the
// anchor sits beside the log, so it detects edits, deletions and truncation
// by anyone who can change the files but not rewrite them wholesale (a
// careless admin, a backup restore, a tool that edits one line). Whoever
// can write the directory, root on the host above all, can recompute every
// hash and the anchor after an edit, and verify will pass. The protection
// against a host-level attacker is the syslog forwarder: records leave the
// host as they are written (with format "json" the chained line itself,
// seq and prev included), so a collector holds a copy the attacker cannot
// reach and a rewritten chain no longer matches it. The forwarder reads the
// file from a cursor kept beside it (File.forward), so it never blocks the
// writer, holds only a bounded read-ahead in memory, and after a collector
// outage or a restart sends the backlog in order.
//
// A batch the disk refuses is kept and retried with back-off, never
// skipped: the queue stalls (OnFull "block" makes Log wait, "drop" counts),
// Failing reports it and WriteErrors counts the attempts. Only Close gives
// records up, after a grace period, and then leaves the anchor at what the
// file really holds.
package audit
