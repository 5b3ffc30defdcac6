package association_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// DCMTK's query/retrieve tools against the Go SCP, which refuses each
// request with 0x0124 (refused: not authorized), the answer the edge gives
// to a service its policy does not allow: the commands decode (C-FIND,
// C-MOVE with its destination, C-GET with SCP/SCU role selection in the RQ)
// and DCMTK reads the refusal we encode.
func TestDCMTKQueryRetrieveRefused(t *testing.T) {
	keys := []string{"-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PAT-9"}
	cases := []struct {
		tool  string
		args  []string
		field dimse.CommandField
		sop   string
		check func(t *testing.T, rq *association.AssociateRQ, cmd *dimse.Command)
	}{
		{tool: "findscu", args: keys, field: dimse.CFindRQ, sop: association.PatientRootQueryRetrieveFind},
		{tool: "movescu", args: append([]string{"-aem", "ARCHIVE"}, keys...), field: dimse.CMoveRQ, sop: association.PatientRootQueryRetrieveMove,
			check: func(t *testing.T, _ *association.AssociateRQ, cmd *dimse.Command) {
				if cmd.MoveDestination != "ARCHIVE" {
					t.Errorf("move destination %q", cmd.MoveDestination)
				}
			}},
		{tool: "getscu", args: keys, field: dimse.CGetRQ, sop: association.PatientRootQueryRetrieveGet,
			check: func(t *testing.T, rq *association.AssociateRQ, _ *dimse.Command) {
				roles := rq.UserInfo.RoleSelections
				if len(roles) == 0 {
					t.Fatal("getscu proposed no SCP/SCU role selection")
				}
				for _, r := range roles {
					if !r.SCP || r.SOPClassUID == "" {
						t.Errorf("role selection %+v: getscu asks for the SCP role", r)
					}
				}
			}},
	}
	acc := &association.Acceptor{
		AbstractSyntaxes: []string{association.PatientRootQueryRetrieveFind, association.PatientRootQueryRetrieveMove, association.PatientRootQueryRetrieveGet},
		TransferSyntaxes: []string{association.ExplicitVRLittleEndian, association.ImplicitVRLittleEndian},
		// Answered in the AC for getscu's proposals: DCMTK must parse our
		// role selection sub-items to go on.
		Roles: map[string]association.RoleSelection{
			association.CTImageStorage: {SCP: true}, association.MRImageStorage: {SCU: true, SCP: true}},
	}
	for _, tc := range cases {
		t.Run(tc.tool, func(t *testing.T) {
			testpeer.Require(t, tc.tool)
			scp := startSCP(t, acc, nil, func(s *testSCP) { s.refuse = dimse.StatusRefusedNotAuthorized })
			out, _ := runPeer(t, tc.tool, append(append([]string{"-v", "-aet", "QRSCU", "-aec", "DICOMEDGE"}, tc.args...), "127.0.0.1", scp.port())...)
			if ends := scp.waitEnds(1); ends[0] != "release" {
				t.Fatalf("association ended with %q\n%s", ends[0], out)
			}
			rqs, cmds, _, _ := scp.snapshot()
			checkDCMTKRQ(t, rqs[0], "DICOMEDGE", "QRSCU", len(rqs[0].PresentationContexts))
			if len(cmds) != 1 || cmds[0].CommandField != tc.field || cmds[0].AffectedSOPClassUID != tc.sop || !cmds[0].HasDataSet() {
				t.Fatalf("commands %+v", cmds)
			}
			if *updateSeeds && tc.tool == "getscu" {
				scp.mu.Lock()
				err := os.WriteFile("testdata/getscu-rq.bin", scp.rawRQs[0], 0o644)
				scp.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
			}
			if tc.check != nil {
				tc.check(t, rqs[0], cmds[0])
			}
			if tc.tool == "getscu" {
				scp.mu.Lock()
				roles := scp.acs[0].UserInfo.RoleSelections
				scp.mu.Unlock()
				want := []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCP: true}, {SOPClassUID: association.MRImageStorage, SCP: true}}
				if len(roles) != 2 || !slices.Contains(roles, want[0]) || !slices.Contains(roles, want[1]) {
					t.Fatalf("AC role selections %+v, want %+v", roles, want)
				}
			}
			// DCMTK 3.6.7 prints the status as "Unknown Status: 0x124": it has
			// no name for 0x0124 in the Q/R services, but reads it as failure.
			if !strings.Contains(out, "Status: 0x124") {
				t.Fatalf("%s does not report the refusal:\n%s", tc.tool, out)
			}
			t.Logf("%s reports:\n%s", tc.tool, lastLines(out, 4))
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
