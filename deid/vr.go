package deid

// vr is a value representation (PS3.5 6.2), two ASCII letters.
type vr uint16

func mkVR(s string) vr { return vr(s[0])<<8 | vr(s[1]) }

func (v vr) String() string { return string([]byte{byte(v >> 8), byte(v)}) }

var (
	vrAE = mkVR("AE")
	vrAS = mkVR("AS")
	vrAT = mkVR("AT")
	vrCS = mkVR("CS")
	vrDA = mkVR("DA")
	vrDS = mkVR("DS")
	vrDT = mkVR("DT")
	vrFD = mkVR("FD")
	vrFL = mkVR("FL")
	vrIS = mkVR("IS")
	vrLO = mkVR("LO")
	vrLT = mkVR("LT")
	vrOB = mkVR("OB")
	vrOD = mkVR("OD")
	vrOF = mkVR("OF")
	vrOL = mkVR("OL")
	vrOV = mkVR("OV")
	vrOW = mkVR("OW")
	vrPN = mkVR("PN")
	vrSH = mkVR("SH")
	vrSL = mkVR("SL")
	vrSQ = mkVR("SQ")
	vrSS = mkVR("SS")
	vrST = mkVR("ST")
	vrSV = mkVR("SV")
	vrTM = mkVR("TM")
	vrUC = mkVR("UC")
	vrUI = mkVR("UI")
	vrUL = mkVR("UL")
	vrUN = mkVR("UN")
	vrUR = mkVR("UR")
	vrUS = mkVR("US")
	vrUT = mkVR("UT")
	vrUV = mkVR("UV")
)

// longHeader reports whether v's explicit VR header has the 4-byte length
// after two reserved bytes (PS3.5 7.1.2, Table 7.1-1).
func (v vr) longHeader() bool {
	switch v {
	case vrOB, vrOD, vrOF, vrOL, vrOV, vrOW, vrSQ, vrUC, vrUR, vrUT, vrUN, vrSV, vrUV:
		return true
	}
	return false
}

// known reports whether v is a VR of PS3.5 Table 6.2-1.
func (v vr) known() bool {
	switch v {
	case vrAE, vrAS, vrAT, vrCS, vrDA, vrDS, vrDT, vrFD, vrFL, vrIS, vrLO, vrLT, vrOB, vrOD, vrOF, vrOL, vrOV, vrOW,
		vrPN, vrSH, vrSL, vrSQ, vrSS, vrST, vrSV, vrTM, vrUC, vrUI, vrUL, vrUN, vrUR, vrUS, vrUT, vrUV:
		return true
	}
	return false
}

// text reports whether v holds character strings (PS3.5 6.2).
func (v vr) text() bool {
	switch v {
	case vrAE, vrAS, vrCS, vrDA, vrDS, vrDT, vrIS, vrLO, vrLT, vrPN, vrSH, vrST, vrTM, vrUC, vrUI, vrUR, vrUT:
		return true
	}
	return false
}

// maxLen is the longest value of one string VR, in bytes (PS3.5 Table
// 6.2-1), 0 for no practical limit.
func (v vr) maxLen() int {
	switch v {
	case vrAE, vrCS, vrSH, vrTM:
		return 16
	case vrAS:
		return 4
	case vrDA:
		return 8
	case vrDS:
		return 16
	case vrDT:
		return 26
	case vrIS:
		return 12
	case vrLO, vrPN, vrUI:
		return 64
	}
	return 0
}
