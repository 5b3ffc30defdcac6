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
package audit
