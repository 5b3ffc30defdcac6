// Package dimse implements DIMSE command sets (PS3.7): group 0000 elements in
// Implicit VR Little Endian, command assembly from PDV fragments, status
// classes and the Verification SCP. Data sets are streamed, never buffered:
// Assembler passes data PDVs through, WriteMessage fragments under the peer's
// maximum PDU length, and PatientIDScanner reads Patient ID from the fragments
// as they pass.
package dimse
