package association

// ImplementationClassUID identifies dicomedge in the user information item
// (a UUID-derived UID under 2.25, PS3.5 B.2).
const ImplementationClassUID = "2.25.188286457671167759668113120255581780806"

// ImplementationVersionName is sent alongside ImplementationClassUID.
const ImplementationVersionName = "DICOMEDGE_1"

// Acceptor describes what an association acceptor supports, for
// presentation-context and role negotiation.
type Acceptor struct {
	AbstractSyntaxes []string
	// TransferSyntaxes in preference order; nil means Implicit VR Little
	// Endian only, the default every peer must support (PS3.5 10.1).
	TransferSyntaxes []string
	// Roles we support per SOP class for SCP/SCU role selection; SOP classes
	// absent here keep the default roles (requestor SCU, acceptor SCP).
	Roles map[string]RoleSelection
}

// Negotiate answers each proposed presentation context: abstract syntax
// unknown gives result 3, no common transfer syntax result 4, a repeated or
// even context ID result 2 (IDs are odd and unique, PS3.8 9.3.2.2);
// otherwise acceptance with our most preferred transfer syntax the peer
// offered. Role selections proposed for SOP classes in Roles are answered
// with the intersection of what was proposed and what we support.
func (a *Acceptor) Negotiate(rq *AssociateRQ) (pcs []PresentationContextAC, roles []RoleSelection) {
	tss := a.TransferSyntaxes
	if tss == nil {
		tss = []string{ImplicitVRLittleEndian}
	}
	var seen [256]bool
	pcs = make([]PresentationContextAC, 0, len(rq.PresentationContexts))
	for _, pc := range rq.PresentationContexts {
		ac := PresentationContextAC{ID: pc.ID, Result: PCAcceptance}
		// Rejections still carry a transfer syntax sub-item; echoing one the
		// peer proposed is what the acceptor is free to send (PS3.8 9.3.3.2).
		if len(pc.TransferSyntaxes) > 0 {
			ac.TransferSyntax = pc.TransferSyntaxes[0]
		}
		switch {
		case seen[pc.ID] || pc.ID%2 == 0:
			ac.Result = PCProviderRejection
		case !contains(a.AbstractSyntaxes, pc.AbstractSyntax):
			ac.Result = PCAbstractSyntaxNotSupported
		default:
			ac.Result = PCTransferSyntaxNotSupported
			for _, ts := range tss {
				if contains(pc.TransferSyntaxes, ts) {
					ac.Result, ac.TransferSyntax = PCAcceptance, ts
					break
				}
			}
		}
		seen[pc.ID] = true
		pcs = append(pcs, ac)
	}
	for _, p := range rq.UserInfo.RoleSelections {
		our, ok := a.Roles[p.SOPClassUID]
		if !ok {
			continue
		}
		roles = append(roles, RoleSelection{SOPClassUID: p.SOPClassUID, SCU: p.SCU && our.SCU, SCP: p.SCP && our.SCP})
	}
	return pcs, roles
}

// Accept builds the A-ASSOCIATE-AC for rq: AE titles and application context
// echoed, contexts and roles from Negotiate, and ui as our user information
// (its RoleSelections replaced by the negotiated ones). Empty
// implementation fields in ui are filled with dicomedge's own.
func (a *Acceptor) Accept(rq *AssociateRQ, ui UserInfo) *AssociateAC {
	pcs, roles := a.Negotiate(rq)
	ui.RoleSelections = roles
	if ui.ImplementationClassUID == "" {
		ui.ImplementationClassUID = ImplementationClassUID
		ui.ImplementationVersionName = ImplementationVersionName
	}
	return &AssociateAC{
		ProtocolVersion:      1,
		CalledAE:             rq.CalledAE,
		CallingAE:            rq.CallingAE,
		ApplicationContext:   rq.ApplicationContext,
		PresentationContexts: pcs,
		UserInfo:             ui,
	}
}

// MinMaxLength is the smallest non-zero maximum length (PS3.8 D.1.1) with
// room for a PDV carrying data: its item header takes 6 bytes (PS3.8
// 9.3.5.1), so no P-DATA-TF can be sent to a peer that accepts less.
const MinMaxLength = 7

// CheckRQ returns the A-ASSOCIATE-RJ the service provider or user must send
// for an RQ it cannot take at all, or nil: protocol version without bit 0
// (PS3.8 9.3.2) gives source 2 reason 2; an application context other than
// the DICOM one gives source 1 reason 2; a maximum length below
// MinMaxLength, which no P-DATA-TF could honour, source 2 reason 1; a
// calling or called AE title of only spaces, which PS3.8 9.3.2 says shall
// not be used, source 1 reason 3 or 7, so that no wildcard rule admits a
// requestor that names no application entity.
func CheckRQ(rq *AssociateRQ) *AssociateRJ {
	if rq.ProtocolVersion&1 == 0 {
		return &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceProviderACSE, Reason: RejectACSEProtocolVersionNotSupport}
	}
	if rq.ApplicationContext != DICOMApplicationContext {
		return &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserApplicationContextNotSupported}
	}
	if TrimAE(rq.CallingAE) == "" {
		return &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserCallingAENotRecognized}
	}
	if TrimAE(rq.CalledAE) == "" {
		return &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserCalledAENotRecognized}
	}
	if n := rq.UserInfo.MaxLength; n != 0 && n < MinMaxLength {
		return &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceProviderACSE, Reason: RejectACSENoReason}
	}
	return nil
}

// AcceptedContext finds an accepted presentation context by ID in an AC.
func (ac *AssociateAC) AcceptedContext(id uint8) (PresentationContextAC, bool) {
	for _, pc := range ac.PresentationContexts {
		if pc.ID == id && pc.Result == PCAcceptance {
			return pc, true
		}
	}
	return PresentationContextAC{}, false
}

// Context finds a proposed presentation context by ID in an RQ.
func (rq *AssociateRQ) Context(id uint8) (PresentationContextRQ, bool) {
	for _, pc := range rq.PresentationContexts {
		if pc.ID == id {
			return pc, true
		}
	}
	return PresentationContextRQ{}, false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
