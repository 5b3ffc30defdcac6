package association_test

import (
	"fmt"
	"net"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// The answer path in miniature: read the A-ASSOCIATE-RQ under a size limit,
// check and negotiate it, accept, then answer C-ECHO until release. Errors
// from the peer become the A-ABORT that AbortFor names.
func Example() {
	client, server := net.Pipe()
	go serveVerification(server)

	// A requestor, written with the same package.
	rq := &association.AssociateRQ{ProtocolVersion: 1, CalledAE: "DICOMEDGE", CallingAE: "MODALITY",
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextRQ{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntaxes: []string{association.ExplicitVRLittleEndian, association.ImplicitVRLittleEndian}}},
		UserInfo: association.UserInfo{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: "1.2.3.4"}}
	r := association.NewReader(client, 1<<20)
	_ = association.WritePDU(client, rq)
	p, _ := r.ReadPDU()
	ac := p.(*association.AssociateAC)
	pc, _ := ac.AcceptedContext(1)
	fmt.Println("accepted context 1 with", pc.TransferSyntax)

	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}
	_ = dimse.WriteMessage(client, 1, echo, nil, ac.UserInfo.MaxLength)
	p, _ = r.ReadPDU()
	rsp, _ := dimse.DecodeCommand(p.(*association.PDataTF).PDVs[0].Data)
	fmt.Println(rsp.CommandField, "status", dimse.ClassOf(rsp.Status))

	_ = association.WritePDU(client, &association.ReleaseRQ{})
	p, _ = r.ReadPDU()
	fmt.Println(p.Type())
	// Output:
	// accepted context 1 with 1.2.840.10008.1.2
	// C-ECHO-RSP status success
	// A-RELEASE-RP
}

func serveVerification(c net.Conn) {
	defer c.Close()
	r := association.NewReader(c, 64<<10)
	p, err := r.ReadPDU()
	rq, ok := p.(*association.AssociateRQ)
	if err != nil || !ok {
		_ = association.WritePDU(c, association.AbortFor(err))
		return
	}
	if rj := association.CheckRQ(rq); rj != nil {
		_ = association.WritePDU(c, rj)
		return
	}
	acc := &association.Acceptor{AbstractSyntaxes: []string{association.VerificationSOPClass}}
	_ = association.WritePDU(c, acc.Accept(rq, association.UserInfo{HasMaxLength: true, MaxLength: 16384}))
	peerMax, _ := rq.UserInfo.MaxPDULength()
	var asm dimse.Assembler
	for {
		p, err := r.ReadPDU()
		if err != nil {
			_ = association.WritePDU(c, association.AbortFor(err))
			return
		}
		switch p := p.(type) {
		case *association.PDataTF:
			for _, v := range p.PDVs {
				cmd, done, err := asm.Add(v)
				if err != nil {
					_ = association.WritePDU(c, association.AbortFor(err))
					return
				}
				if done && cmd.CommandField == dimse.CEchoRQ {
					_ = dimse.WriteMessage(c, v.ContextID, dimse.VerificationResponse(cmd), nil, peerMax)
				}
			}
		case *association.ReleaseRQ:
			_ = association.WritePDU(c, &association.ReleaseRP{})
			return
		default:
			_ = association.WritePDU(c, association.AbortFor(association.Unexpected(p.Type())))
			return
		}
	}
}
