// Package association implements the DICOM Upper Layer protocol (PS3.8): the
// PDU and item types, their bounds-checked encoding and decoding, reading PDUs
// from a stream under a size limit, the A-ASSOCIATE-RJ and A-ABORT codes, and
// presentation-context negotiation. It knows nothing of TLS, policy or backends.
package association
