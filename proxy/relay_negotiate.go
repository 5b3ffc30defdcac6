package proxy

import (
	"slices"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/deid"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// backendRQ is the A-ASSOCIATE-RQ the edge sends the backend for the
// client's rq: built anew from what the edge understands, never a copy of
// rq, so unknown items and sub-items stay behind (PS3.8 9.3.2, PS3.7 D.3.3).
// It carries the backend's AE title, the presentation contexts the rule
// allows (removed: the IDs of the others), role selection and extended
// negotiation only for the abstract syntaxes kept, and a maximum length no
// larger than the edge's: PDUs are forwarded unchanged, so what the
// backend sends must fit the client and the edge.
func backendRQ(rq *association.AssociateRQ, d *policy.Decision, calledAE string, maxLen uint32) (*association.AssociateRQ, map[uint8]bool) {
	brq := &association.AssociateRQ{
		ProtocolVersion:    1, // PS3.8 9.3.2: bit 0, version 1
		CalledAE:           calledAE,
		CallingAE:          rq.CallingAE,
		ApplicationContext: rq.ApplicationContext,
	}
	removed := map[uint8]bool{}
	kept := map[string]bool{}
	for _, pc := range rq.PresentationContexts {
		if !d.AllowsSOPClass(pc.AbstractSyntax) {
			removed[pc.ID] = true
			continue
		}
		ts := pc.TransferSyntaxes
		if d.Deidentify != nil {
			// The transform rewrites only what it parses: deflated and big
			// endian data sets are not offered to the backend.
			ts = slices.DeleteFunc(slices.Clone(ts), func(s string) bool { return !deid.Supported(s) })
			if len(ts) == 0 {
				removed[pc.ID] = true
				continue
			}
		}
		kept[pc.AbstractSyntax] = true
		brq.PresentationContexts = append(brq.PresentationContexts, association.PresentationContextRQ{
			ID: pc.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntaxes: ts})
	}
	ui := &rq.UserInfo
	bui := &brq.UserInfo
	bui.MaxLength, bui.HasMaxLength = clampMax(ui.MaxLength, maxLen), true
	bui.ImplementationClassUID, bui.ImplementationVersionName = ui.ImplementationClassUID, ui.ImplementationVersionName
	if u := ui.UserIdentityRQ; u != nil && u.Type.Known() {
		bui.UserIdentityRQ = u // of another type it is not a sub-item the edge understands
	}
	if w := ui.AsyncOps; w != nil {
		// The edge judges at most inspect.MaxOutstanding operations per side
		// at once (0 is unlimited, PS3.7 D.3.3.3).
		bui.AsyncOps = &association.AsyncOpsWindow{MaxInvoked: clampOps(w.MaxInvoked), MaxPerformed: clampOps(w.MaxPerformed)}
	}
	for _, rs := range ui.RoleSelections {
		if kept[rs.SOPClassUID] {
			bui.RoleSelections = append(bui.RoleSelections, rs)
		}
	}
	for _, en := range ui.ExtendedNegotiations {
		if kept[en.SOPClassUID] {
			bui.ExtendedNegotiations = append(bui.ExtendedNegotiations, en)
		}
	}
	for _, cen := range ui.CommonExtendedNegotiations {
		if kept[cen.SOPClassUID] {
			bui.CommonExtendedNegotiations = append(bui.CommonExtendedNegotiations, cen)
		}
	}
	return brq, removed
}

// minOps is the smaller of two window values where 0 is unlimited.
func minOps(a, b uint16) uint16 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

func clampOps(n uint16) uint16 {
	if n == 0 || n > inspect.MaxOutstanding {
		return inspect.MaxOutstanding
	}
	return n
}

// clientAC is the A-ASSOCIATE-AC the client gets for the backend's ac,
// built anew as backendRQ is: the AE titles the client used, the
// backend's answer for each context it was offered and user rejection
// (PS3.8 9.3.3.2 result 1) for those the rule removed, role selection and
// extended negotiation only for what the client proposed and the backend
// was offered, and a maximum length no larger than the edge's. Nothing the
// backend was not asked for passes: an acceptance with a transfer syntax
// the client did not propose (PS3.8 9.3.3.2) becomes a rejection (result
// 4), a user identity response needs a request that asked for one (PS3.7
// D.3.3.7), an asynchronous operations window a proposal (PS3.7 D.3.3.3).
// It also returns the inspection's view of the association and the
// abstract syntaxes accepted (for the audit).
func clientAC(rq *association.AssociateRQ, ac *association.AssociateAC, removed map[uint8]bool, maxLen uint32) (*association.AssociateAC, inspect.Config, []string) {
	cac := &association.AssociateAC{
		ProtocolVersion:    1,
		CalledAE:           rq.CalledAE,
		CallingAE:          rq.CallingAE,
		ApplicationContext: ac.ApplicationContext,
	}
	var icfg inspect.Config
	var accepted []string
	for _, pc := range rq.PresentationContexts {
		// A rejection's transfer syntax is not tested (PS3.8 9.3.3.2): the
		// client's first is given, never the backend's unchecked value.
		ts := ""
		if len(pc.TransferSyntaxes) > 0 {
			ts = pc.TransferSyntaxes[0]
		}
		if removed[pc.ID] {
			cac.PresentationContexts = append(cac.PresentationContexts,
				association.PresentationContextAC{ID: pc.ID, Result: association.PCUserRejection, TransferSyntax: ts})
			continue
		}
		bpc, ok := ac.AcceptedContext(pc.ID)
		if !ok {
			// PS3.8 9.3.3.2: every proposed context is answered; one the
			// backend left out of its AC is a provider rejection (no
			// reason), so the client does not wait on it or guess.
			res := association.PCProviderRejection
			for _, x := range ac.PresentationContexts {
				if x.ID == pc.ID && x.Result <= association.PCTransferSyntaxNotSupported {
					res = x.Result // else a result PS3.8 9.3.3.2 does not define
				}
			}
			cac.PresentationContexts = append(cac.PresentationContexts,
				association.PresentationContextAC{ID: pc.ID, Result: res, TransferSyntax: ts})
			continue
		}
		if !slices.Contains(pc.TransferSyntaxes, bpc.TransferSyntax) {
			cac.PresentationContexts = append(cac.PresentationContexts, association.PresentationContextAC{ID: pc.ID,
				Result: association.PCTransferSyntaxNotSupported, TransferSyntax: bpc.TransferSyntax})
			continue
		}
		cac.PresentationContexts = append(cac.PresentationContexts,
			association.PresentationContextAC{ID: bpc.ID, Result: bpc.Result, TransferSyntax: bpc.TransferSyntax})
		icfg.Contexts = append(icfg.Contexts, inspect.Context{ID: pc.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntax: bpc.TransferSyntax})
		accepted = appendUnique(accepted, pc.AbstractSyntax)
	}
	ui, cui := &ac.UserInfo, &cac.UserInfo
	cui.MaxLength, cui.HasMaxLength = requestorOffer(ui.MaxLength, maxLen), true
	cui.ImplementationClassUID, cui.ImplementationVersionName = ui.ImplementationClassUID, ui.ImplementationVersionName
	if w, bw := rq.UserInfo.AsyncOps, ui.AsyncOps; w != nil && bw != nil {
		// PS3.7 D.3.3.3: no more than was proposed, and the backend was
		// proposed the client's window clamped to what the edge judges
		// (0, unlimited, included): a backend's larger answer or 0 would
		// tell the client it may have more outstanding than the edge takes.
		cui.AsyncOps = &association.AsyncOpsWindow{MaxInvoked: minOps(clampOps(w.MaxInvoked), bw.MaxInvoked),
			MaxPerformed: minOps(clampOps(w.MaxPerformed), bw.MaxPerformed)}
	}
	if u := rq.UserInfo.UserIdentityRQ; u != nil && u.PositiveResponseRequested {
		cui.UserIdentityAC = ui.UserIdentityAC
	}
	offered := map[string]bool{} // abstract syntaxes the backend was offered
	for _, pc := range rq.PresentationContexts {
		if !removed[pc.ID] {
			offered[pc.AbstractSyntax] = true
		}
	}
	proposedRoles := map[string]association.RoleSelection{}
	proposed := map[string]bool{}
	for _, rs := range rq.UserInfo.RoleSelections {
		proposed[rs.SOPClassUID] = offered[rs.SOPClassUID]
		proposedRoles[rs.SOPClassUID] = rs
	}
	for _, rs := range ui.RoleSelections {
		if !proposed[rs.SOPClassUID] {
			continue
		}
		// PS3.7 D.3.3.4: the acceptor may only accept a role proposed,
		// the SCU role as well as the SCP role.
		p := proposedRoles[rs.SOPClassUID]
		rs.SCU = rs.SCU && p.SCU
		rs.SCP = rs.SCP && p.SCP
		cui.RoleSelections = append(cui.RoleSelections, rs)
		if rs.SCP {
			icfg.RequestorSCP = append(icfg.RequestorSCP, rs.SOPClassUID)
		}
	}
	for _, en := range ui.ExtendedNegotiations {
		if offered[en.SOPClassUID] && proposedExtended(rq, en.SOPClassUID) {
			cui.ExtendedNegotiations = append(cui.ExtendedNegotiations, en)
		}
	}
	icfg.MaxPDU[inspect.Requestor] = clampMax(rq.UserInfo.MaxLength, maxLen)
	icfg.MaxPDU[inspect.Acceptor] = clampMax(ui.MaxLength, maxLen)
	return cac, icfg, accepted
}

func proposedExtended(rq *association.AssociateRQ, uid string) bool {
	for _, en := range rq.UserInfo.ExtendedNegotiations {
		if en.SOPClassUID == uid {
			return true
		}
	}
	return false
}

// relayOffer is the least maximum length the edge offers a relayed
// association's requestor: PDUs of at most it are cut to the backend's
// maximum on their way (the inspection rebuilds them), so a sender
// whose costs go by the PDU (DCMTK's do: 16 KiB PDUs take about 1.5 times
// as long as 128 KiB ones) sends fewer, whatever the backend takes. Each
// PDU is held whole before it is forwarded; this bounds that.
const relayOffer = 128 << 10

// offerGrowthMax bounds the offer by the backend's maximum B: a PDU cut to
// B carries B-6 data bytes in B+6 on the wire (PS3.8 9.3.1, 9.3.5: 6-byte
// PDU and PDV item headers), so the inspection's rebuilt PDUs are
// (B+6)/(B-6) times the client's, 13 times at B = 7. A client PDU of at
// most 16 B keeps what one makes the edge build and hold small.
const offerGrowthMax = 16

// requestorOffer is the maximum length offered to the requestor when the
// backend accepts backend: the larger of that and relayOffer, within the
// edge's own maximum and offerGrowthMax times the backend's.
func requestorOffer(backend, edge uint32) uint32 {
	b := clampMax(backend, edge)
	return max(b, uint32(min(uint64(relayOffer), uint64(edge), offerGrowthMax*uint64(b))))
}
