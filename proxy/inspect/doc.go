// Package inspect is the relay's judgement of the DIMSE conversation on one
// association, free of I/O: an Inspector is built from the negotiated
// presentation contexts and roles and from the policy decision, and is fed
// each P-DATA-TF from either side. It answers with a Verdict: forward the PDU
// as it came, forward rewritten PDUs (held command fragments, a refused
// request taken out), send a refusal back to the sender, or abort the
// association for a protocol violation. It keeps the ledger of operations
// that yields the `dimse` audit records (docs/audit.md).
//
// The sides are named after the association (PS3.8 7.1): the association
// requestor sent the A-ASSOCIATE-RQ, the acceptor answered it. Nothing here
// knows which of them is outside the perimeter; the policy judges requests
// from the requestor side, and the acceptor side may only send what its
// negotiated role allows (PS3.7 D.3.3.4).
//
// Everything held is bounded in bytes whatever the PDV count (docs/limits.md).
package inspect
