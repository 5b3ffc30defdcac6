// Package audit owns the audit trail: event types, the append-only,
// hash-chained JSON-lines writer behind a bounded queue, and the reader used by
// `dicomedge audit` to filter, summarise and verify it.
package audit
