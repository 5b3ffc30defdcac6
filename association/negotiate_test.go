package association

import "testing"

func TestNegotiate(t *testing.T) {
	acc := &Acceptor{
		AbstractSyntaxes: []string{VerificationSOPClass, CTImageStorage, PatientRootQueryRetrieveGet},
		TransferSyntaxes: []string{ExplicitVRLittleEndian, ImplicitVRLittleEndian},
		Roles:            map[string]RoleSelection{CTImageStorage: {SCU: true, SCP: true}, MRImageStorage: {SCU: true}},
	}
	cases := []struct {
		name string
		acc  *Acceptor
		pcs  []PresentationContextRQ
		rs   []RoleSelection
		want []PresentationContextAC
		role []RoleSelection
	}{
		{
			name: "our preference wins over the proposal order",
			acc:  acc,
			pcs:  []PresentationContextRQ{{ID: 1, AbstractSyntax: CTImageStorage, TransferSyntaxes: []string{JPEGBaseline8Bit, ImplicitVRLittleEndian, ExplicitVRLittleEndian}}},
			want: []PresentationContextAC{{ID: 1, Result: PCAcceptance, TransferSyntax: ExplicitVRLittleEndian}},
		},
		{
			name: "abstract syntax not supported",
			acc:  acc,
			pcs:  []PresentationContextRQ{{ID: 1, AbstractSyntax: MRImageStorage, TransferSyntaxes: []string{ImplicitVRLittleEndian}}},
			want: []PresentationContextAC{{ID: 1, Result: PCAbstractSyntaxNotSupported, TransferSyntax: ImplicitVRLittleEndian}},
		},
		{
			name: "no common transfer syntax",
			acc:  acc,
			pcs:  []PresentationContextRQ{{ID: 3, AbstractSyntax: CTImageStorage, TransferSyntaxes: []string{JPEG2000}}},
			want: []PresentationContextAC{{ID: 3, Result: PCTransferSyntaxNotSupported, TransferSyntax: JPEG2000}},
		},
		{
			name: "no transfer syntax proposed",
			acc:  acc,
			pcs:  []PresentationContextRQ{{ID: 3, AbstractSyntax: CTImageStorage}},
			want: []PresentationContextAC{{ID: 3, Result: PCTransferSyntaxNotSupported}},
		},
		{
			name: "duplicate and even IDs refused",
			acc:  acc,
			pcs: []PresentationContextRQ{
				{ID: 1, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
				{ID: 1, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
				{ID: 2, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
			},
			want: []PresentationContextAC{
				{ID: 1, Result: PCAcceptance, TransferSyntax: ImplicitVRLittleEndian},
				{ID: 1, Result: PCProviderRejection, TransferSyntax: ImplicitVRLittleEndian},
				{ID: 2, Result: PCProviderRejection, TransferSyntax: ImplicitVRLittleEndian},
			},
		},
		{
			name: "nil transfer syntaxes mean Implicit VR Little Endian only",
			acc:  &Acceptor{AbstractSyntaxes: []string{VerificationSOPClass}},
			pcs: []PresentationContextRQ{
				{ID: 1, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ExplicitVRLittleEndian}},
				{ID: 3, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ExplicitVRLittleEndian, ImplicitVRLittleEndian}},
			},
			want: []PresentationContextAC{
				{ID: 1, Result: PCTransferSyntaxNotSupported, TransferSyntax: ExplicitVRLittleEndian},
				{ID: 3, Result: PCAcceptance, TransferSyntax: ImplicitVRLittleEndian},
			},
		},
		{
			name: "roles intersected, unknown SOP classes left to defaults",
			acc:  acc,
			rs: []RoleSelection{
				{SOPClassUID: CTImageStorage, SCU: false, SCP: true},
				{SOPClassUID: MRImageStorage, SCU: true, SCP: true},
				{SOPClassUID: JPEG2000, SCU: true, SCP: true},
			},
			want: []PresentationContextAC{},
			role: []RoleSelection{{SOPClassUID: CTImageStorage, SCP: true}, {SOPClassUID: MRImageStorage, SCU: true}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rq := &AssociateRQ{PresentationContexts: tc.pcs, UserInfo: UserInfo{RoleSelections: tc.rs}}
			pcs, roles := tc.acc.Negotiate(rq)
			mustEqual(t, pcs, tc.want)
			mustEqual(t, roles, tc.role)
		})
	}
}

func TestAcceptAndCheckRQ(t *testing.T) {
	rq := &AssociateRQ{ProtocolVersion: 1, CalledAE: "EDGE", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext,
		PresentationContexts: []PresentationContextRQ{{ID: 5, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}}}}
	ac := (&Acceptor{AbstractSyntaxes: []string{VerificationSOPClass}}).Accept(rq, UserInfo{HasMaxLength: true, MaxLength: 65536})
	if ac.CalledAE != "EDGE" || ac.CallingAE != "MOD" || ac.ApplicationContext != DICOMApplicationContext || ac.ProtocolVersion != 1 {
		t.Fatalf("AC header %+v", ac)
	}
	if pc, ok := ac.AcceptedContext(5); !ok || pc.TransferSyntax != ImplicitVRLittleEndian {
		t.Fatalf("context 5: %+v %v", pc, ok)
	}
	if ac.UserInfo.ImplementationClassUID != ImplementationClassUID || ac.UserInfo.MaxLength != 65536 {
		t.Fatalf("user info %+v", ac.UserInfo)
	}
	if pc, ok := rq.Context(5); !ok || pc.AbstractSyntax != VerificationSOPClass {
		t.Fatal("rq.Context(5)")
	}

	cases := []struct {
		name string
		rq   AssociateRQ
		want *AssociateRJ
	}{
		{"acceptable", AssociateRQ{ProtocolVersion: 1, CalledAE: "PACS", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext}, nil},
		{"other bits of the version ignored", AssociateRQ{ProtocolVersion: 3, CalledAE: "PACS", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext}, nil},
		{"protocol version without bit 0", AssociateRQ{ProtocolVersion: 2, ApplicationContext: DICOMApplicationContext},
			&AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceProviderACSE, Reason: RejectACSEProtocolVersionNotSupport}},
		{"foreign application context", AssociateRQ{ProtocolVersion: 1, ApplicationContext: "1.2.3"},
			&AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserApplicationContextNotSupported}},
		{"maximum length 0 is no limit", AssociateRQ{ProtocolVersion: 1, CalledAE: "PACS", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext,
			UserInfo: UserInfo{HasMaxLength: true}}, nil},
		{"maximum length 7 carries one byte a PDV", AssociateRQ{ProtocolVersion: 1, CalledAE: "PACS", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext,
			UserInfo: UserInfo{HasMaxLength: true, MaxLength: MinMaxLength}}, nil},
		{"maximum length 6 carries no PDV", AssociateRQ{ProtocolVersion: 1, CalledAE: "PACS", CallingAE: "MOD", ApplicationContext: DICOMApplicationContext,
			UserInfo: UserInfo{HasMaxLength: true, MaxLength: 6}},
			&AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceProviderACSE, Reason: RejectACSENoReason}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { mustEqual(t, CheckRQ(&tc.rq), tc.want) })
	}
}

// PS3.8 9.3.2: a called or calling AE title of 16 spaces ("no
// Application Name specified") shall not be used. It decoded to "" and
// went to policy, where calling_ae = ["*"] matched it, and on to the
// backend as 16 spaces; the audit record then held no AE title, so policy
// replay could not decide it again. It is now refused before any rule:
// 1/1/3 (calling AE title not recognized), 1/1/7 (called).
func TestCheckRQAllSpacesAETitles(t *testing.T) {
	for _, tc := range []struct {
		name            string
		called, calling string
		want            *AssociateRJ
	}{
		{"both given", "PACS", "MOD", nil},
		{"calling all spaces", "PACS", "", &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserCallingAENotRecognized}},
		{"called all spaces", "", "MOD", &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectUserCalledAENotRecognized}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := cat(u16(1), u16(0), ae(tc.called), ae(tc.calling), make([]byte, 32),
				item(0x10, str(DICOMApplicationContext)), pcRQ(1), item(0x50, item(0x51, u32(16384))))
			p, err := Decode(TypeAssociateRQ, body)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, CheckRQ(p.(*AssociateRQ)), tc.want)
		})
	}
}

func TestClampMaxLengthAndUser(t *testing.T) {
	cases := []struct {
		name      string
		in        UserInfo
		limit     uint32
		want      uint32
		wantLimit bool
	}{
		{"absent", UserInfo{}, 16384, 16384, true},
		{"unlimited", UserInfo{HasMaxLength: true}, 16384, 16384, true},
		{"larger", UserInfo{HasMaxLength: true, MaxLength: 1 << 20}, 16384, 16384, true},
		{"smaller kept", UserInfo{HasMaxLength: true, MaxLength: 4096}, 16384, 4096, true},
		{"no limit of ours", UserInfo{HasMaxLength: true}, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.in
			u.ClampMaxLength(tc.limit)
			if n, ok := u.MaxPDULength(); n != tc.want || ok != tc.wantLimit {
				t.Fatalf("MaxPDULength = %d, %v", n, ok)
			}
		})
	}
	for typ, want := range map[UserIdentityType]string{UserIdentityUsername: "alice", UserIdentityUsernamePasscode: "alice",
		UserIdentityKerberos: "", UserIdentitySAML: "", UserIdentityJWT: ""} {
		u := &UserIdentityRQ{Type: typ, Primary: []byte("alice"), Secondary: []byte("secret")}
		if u.User() != want {
			t.Errorf("%v: User() = %q", typ, u.User())
		}
	}
}
