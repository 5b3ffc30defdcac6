// Package spool holds instances the edge has acknowledged but not yet
// delivered: one durable queue of DICOM Part 10 files per backend, written
// the way a mail server writes its queue (a file not yet in the queue,
// fsync, named into the queue, fsync of the directory, then the
// acknowledgement), with the directory fsyncs of concurrent writers shared
// (group commit) and spent files reused rather than deleted. Forwarders
// drain each queue in arrival order through a Sender, with capped
// exponential back-off on transient failures; permanent failures move to
// failed/, instances older than max_age to expired/, both audited. The
// package decides no policy and knows no protocol beyond the Sender
// interface.
package spool
