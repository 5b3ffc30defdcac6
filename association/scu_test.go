package association_test

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// implicitElement encodes one Implicit VR Little Endian data element; UIDs
// (group 0008 elements 0016/0018 here) pad with NUL, text with a space.
func implicitElement(group, elem uint16, v string) []byte {
	if len(v)%2 == 1 {
		if group == 0x0008 && (elem == 0x0016 || elem == 0x0018) {
			v += "\x00"
		} else {
			v += " "
		}
	}
	b := binary.LittleEndian.AppendUint16(nil, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// TestGoSCUAgainstDCMTKStorescp is the other direction, the one a relay uses
// towards its backend: our A-ASSOCIATE-RQ accepted by DCMTK's storescp, its
// AC decoded, a C-ECHO and a C-STORE answered with success, a clean release,
// and the stored file carries what we sent.
func TestGoSCUAgainstDCMTKStorescp(t *testing.T) {
	testpeer.Require(t, "storescp", "dcmdump")
	dir := t.TempDir()
	// StartListening: a port picked as free may be taken before storescp
	// binds it (seen under load), and storescp is then started on another.
	_, addrs := testpeer.StartListening(t, 1, "storescp", func(addrs []string) []string {
		return []string{"-aet", "STORESCP", "-od", dir, strconv.Itoa(testpeer.Port(addrs[0]))}
	})
	addr := addrs[0]

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rq := &association.AssociateRQ{ProtocolVersion: 1, CalledAE: "STORESCP", CallingAE: "DICOMEDGE",
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextRQ{
			{ID: 1, AbstractSyntax: association.VerificationSOPClass, TransferSyntaxes: []string{association.ImplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ImplicitVRLittleEndian}},
			{ID: 5, AbstractSyntax: "1.2.3.4.5.6.7", TransferSyntaxes: []string{association.ImplicitVRLittleEndian}},
		},
		UserInfo: association.UserInfo{HasMaxLength: true, MaxLength: 16384,
			ImplementationClassUID: association.ImplementationClassUID, ImplementationVersionName: association.ImplementationVersionName,
			Extra: []association.RawItem{{Type: 0x5f, Data: []byte("unknown sub-item a peer must skip")}}},
	}
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	r := association.NewReader(c, 1<<20)
	p, err := r.ReadPDU()
	if err != nil {
		t.Fatal(err)
	}
	ac, ok := p.(*association.AssociateAC)
	if !ok {
		t.Fatalf("storescp answered %#v", p)
	}
	if !strings.HasPrefix(ac.UserInfo.ImplementationClassUID, "1.2.276.0.7230010.3") || !ac.UserInfo.HasMaxLength {
		t.Errorf("AC user info %+v", ac.UserInfo)
	}
	want := map[uint8]association.PCResult{1: association.PCAcceptance, 3: association.PCAcceptance, 5: association.PCAbstractSyntaxNotSupported}
	for _, pc := range ac.PresentationContexts {
		if pc.Result != want[pc.ID] {
			t.Errorf("context %d: %v, want %v", pc.ID, pc.Result, want[pc.ID])
		}
	}
	peerMax, _ := ac.UserInfo.MaxPDULength()

	roundTrip := func(ctx uint8, cmd *dimse.Command, data []byte) *dimse.Command {
		t.Helper()
		if err := dimse.WriteMessage(c, ctx, cmd, data, peerMax); err != nil {
			t.Fatal(err)
		}
		var asm dimse.Assembler
		for {
			p, err := r.ReadPDU()
			if err != nil {
				t.Fatal(err)
			}
			pd, ok := p.(*association.PDataTF)
			if !ok {
				t.Fatalf("got %v while waiting for a response", p.Type())
			}
			for _, v := range pd.PDVs {
				if rsp, done, err := asm.Add(v); err != nil {
					t.Fatal(err)
				} else if done {
					return rsp
				}
			}
		}
	}
	echo := roundTrip(1, &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}, nil)
	if echo.CommandField != dimse.CEchoRSP || echo.MessageIDBeingRespondedTo != 1 || dimse.ClassOf(echo.Status) != dimse.ClassSuccess {
		t.Fatalf("C-ECHO-RSP %+v", echo)
	}

	const sopInstance = "1.2.826.0.1.3680043.2.1143.4242"
	dataset := append(append(append(append(
		implicitElement(0x0008, 0x0016, association.SecondaryCaptureImageStorage),
		implicitElement(0x0008, 0x0018, sopInstance)...),
		implicitElement(0x0008, 0x0064, "WSD")...),
		implicitElement(0x0010, 0x0010, "Roe^Richard")...),
		implicitElement(0x0010, 0x0020, "EDGE-77")...)
	store := roundTrip(3, &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 2, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: sopInstance, CommandDataSetType: dimse.DataSetPresent}, dataset)
	if store.CommandField != dimse.CStoreRSP || store.MessageIDBeingRespondedTo != 2 || store.AffectedSOPInstanceUID != sopInstance ||
		dimse.ClassOf(store.Status) != dimse.ClassSuccess {
		t.Fatalf("C-STORE-RSP %+v", store)
	}

	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if p, err := r.ReadPDU(); err != nil || p.Type() != association.TypeReleaseRP {
		t.Fatalf("release: %v %v", p, err)
	}

	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("storescp wrote %v", files)
	}
	out, code := runPeer(t, "dcmdump", files[0])
	if code != 0 || !strings.Contains(out, "[EDGE-77]") || !strings.Contains(out, sopInstance) {
		t.Fatalf("stored file:\n%s", out)
	}
	_ = os.Remove(files[0])
}
