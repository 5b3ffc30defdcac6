// Package loadclient drives a DICOM edge for scripts/bench: it opens full
// associations as fast as a number of workers can (TLS handshake, A-ASSOCIATE,
// one C-ECHO, A-RELEASE), optionally resuming TLS sessions, and it holds many
// idle associations open, optionally after one bulk C-STORE each, so that the
// edge's memory per association can be read off its RSS. It also carries the
// minimal storage SCP those relayed associations end at. cmd/dicomedge-load is
// its command line; nothing here is used by the edge itself.
package loadclient
