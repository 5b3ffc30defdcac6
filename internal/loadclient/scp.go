package loadclient

import (
	"net"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// ServeSCP is a minimal SCP for the relayed hold: it accepts every proposed
// context and answers each complete request with status 0x0000, for any
// number of associations at once, until ln is closed. It holds at most one
// 4 MiB PDU per association and keeps no data.
func ServeSCP(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		go scpConn(nc)
	}
}

func scpConn(nc net.Conn) {
	defer nc.Close()
	r := association.NewReader(nc, 4<<20)
	p, err := r.ReadPDU()
	if err != nil {
		return
	}
	rq, ok := p.(*association.AssociateRQ)
	if !ok {
		return
	}
	ac := &association.AssociateAC{ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
		ApplicationContext: rq.ApplicationContext,
		UserInfo:           association.UserInfo{MaxLength: 1 << 20, HasMaxLength: true, ImplementationClassUID: "1.2.826.0.1.3680043.10.1418.1"}}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts,
			association.PresentationContextAC{ID: pc.ID, Result: association.PCAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	if association.WritePDU(nc, ac) != nil {
		return
	}
	var asm dimse.Assembler
	var req *dimse.Command
	var ctx uint8
	for {
		p, err := r.ReadPDU()
		if err != nil {
			return
		}
		pd, ok := p.(*association.PDataTF)
		if !ok {
			if _, rel := p.(*association.ReleaseRQ); rel {
				_ = association.WritePDU(nc, &association.ReleaseRP{})
			}
			return
		}
		for _, v := range pd.PDVs {
			cmd, done, err := asm.Add(v)
			if err != nil {
				return
			}
			if done {
				req, ctx = cmd, v.ContextID
			}
			if req != nil && (done && !req.HasDataSet() || !v.Command && v.Last) {
				if dimse.WriteMessage(nc, ctx, dimse.NewResponse(req, dimse.StatusSuccess), nil, 16384) != nil {
					return
				}
				req = nil
			}
		}
	}
}
