package proxy

import (
	"reflect"
	"testing"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// The client's A-ASSOCIATE-AC is the edge's own, and grants no more than
// the client proposed and the edge can serve. The backend's answer used to
// pass through where PS3.7 and PS3.8 bound it: an SCU role the client had
// not proposed (PS3.7 D.3.3.4: only a proposed role may be accepted), an
// asynchronous operations window above the one proposed, or 0 (unlimited)
// where the edge judges at most inspect.MaxOutstanding operations per side
// (PS3.7 D.3.3.3), and no answer at all for a context the backend left out
// of its AC (PS3.8 9.3.3.2: every proposed context is answered).
func TestClientACGrantsNoMoreThanProposed(t *testing.T) {
	ts := []string{association.ExplicitVRLittleEndian}
	rq := &association.AssociateRQ{
		CalledAE: "EDGE", CallingAE: "MOD",
		PresentationContexts: []association.PresentationContextRQ{
			{ID: 1, AbstractSyntax: association.CTImageStorage, TransferSyntaxes: ts},
			{ID: 3, AbstractSyntax: association.MRImageStorage, TransferSyntaxes: ts},
			{ID: 5, AbstractSyntax: association.StudyRootQueryRetrieveGet, TransferSyntaxes: ts},
		},
		UserInfo: association.UserInfo{
			HasMaxLength: true, MaxLength: 65536,
			RoleSelections: []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCU: false, SCP: true}},
		},
	}
	ac := &association.AssociateAC{
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextAC{
			{ID: 1, Result: association.PCAcceptance, TransferSyntax: ts[0]},
			{ID: 5, Result: association.PCAcceptance, TransferSyntax: ts[0]},
			// ID 3 left out by the backend.
		},
		UserInfo: association.UserInfo{
			HasMaxLength: true, MaxLength: 65536,
			RoleSelections: []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCU: true, SCP: true}},
		},
	}

	t.Run("roles", func(t *testing.T) {
		cac, icfg, _ := clientAC(rq, ac, map[uint8]bool{}, 1<<20)
		want := []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCU: false, SCP: true}}
		if !reflect.DeepEqual(cac.UserInfo.RoleSelections, want) {
			t.Errorf("role selections %+v, want %+v (the SCU role was not proposed)", cac.UserInfo.RoleSelections, want)
		}
		if !reflect.DeepEqual(icfg.RequestorSCP, []string{association.CTImageStorage}) {
			t.Errorf("RequestorSCP %v", icfg.RequestorSCP)
		}
	})

	t.Run("every proposed context answered", func(t *testing.T) {
		cac, _, _ := clientAC(rq, ac, map[uint8]bool{}, 1<<20)
		got := map[uint8]association.PCResult{}
		for _, pc := range cac.PresentationContexts {
			got[pc.ID] = pc.Result
		}
		want := map[uint8]association.PCResult{1: association.PCAcceptance, 3: association.PCProviderRejection, 5: association.PCAcceptance}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("context results %v, want %v", got, want)
		}
	})

	windows := []struct {
		name            string
		client, backend association.AsyncOpsWindow
		want            association.AsyncOpsWindow
	}{
		{"unlimited both ways", association.AsyncOpsWindow{}, association.AsyncOpsWindow{},
			association.AsyncOpsWindow{MaxInvoked: inspect.MaxOutstanding, MaxPerformed: inspect.MaxOutstanding}},
		{"backend grants more than proposed", association.AsyncOpsWindow{MaxInvoked: 5, MaxPerformed: 1}, association.AsyncOpsWindow{MaxInvoked: 10, MaxPerformed: 0},
			association.AsyncOpsWindow{MaxInvoked: 5, MaxPerformed: 1}},
		{"backend grants less", association.AsyncOpsWindow{MaxInvoked: 0, MaxPerformed: 8}, association.AsyncOpsWindow{MaxInvoked: 3, MaxPerformed: 2},
			association.AsyncOpsWindow{MaxInvoked: 3, MaxPerformed: 2}},
	}
	for _, tc := range windows {
		t.Run("async window "+tc.name, func(t *testing.T) {
			rq, ac := *rq, *ac
			client, backend := tc.client, tc.backend
			rq.UserInfo.AsyncOps, ac.UserInfo.AsyncOps = &client, &backend
			cac, _, _ := clientAC(&rq, &ac, map[uint8]bool{}, 1<<20)
			if w := cac.UserInfo.AsyncOps; w == nil || *w != tc.want {
				t.Errorf("window %+v, want %+v", w, tc.want)
			}
		})
	}
}
