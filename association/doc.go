// Package association implements the DICOM Upper Layer protocol (PS3.8): the
// PDU and item types, their bounds-checked encoding and decoding, reading PDUs
// from a stream under a size limit, the A-ASSOCIATE-RJ and A-ABORT codes, and
// presentation-context negotiation. It knows nothing of TLS, policy or backends.
//
// Reader.Next returns raw PDUs for relaying (EachPDV walks a P-DATA-TF body
// without allocating); Reader.ReadPDU and Decode give typed values; Append and
// WritePDU encode. Malformed input is a *ProtocolError, and AbortFor turns any
// error into the A-ABORT to send. Items this package does not know are kept as
// RawItem and re-encoded, so a relay forwards them.
package association
