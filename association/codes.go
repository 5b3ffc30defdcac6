package association

import "fmt"

// PDUType is the first byte of every PDU (PS3.8 9.3.1).
type PDUType uint8

// PDU types, PS3.8 Table 9-1 .. 9-26.
const (
	TypeAssociateRQ PDUType = 0x01
	TypeAssociateAC PDUType = 0x02
	TypeAssociateRJ PDUType = 0x03
	TypePDataTF     PDUType = 0x04
	TypeReleaseRQ   PDUType = 0x05
	TypeReleaseRP   PDUType = 0x06
	TypeAbort       PDUType = 0x07
)

func (t PDUType) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePDataTF:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return fmt.Sprintf("PDU-type-0x%02x", uint8(t))
}

// Known reports whether t is one of the seven PDU types PS3.8 defines.
func (t PDUType) Known() bool { return t >= TypeAssociateRQ && t <= TypeAbort }

// RejectResult is the Result field of A-ASSOCIATE-RJ (PS3.8 9.3.4, Table 9-21).
type RejectResult uint8

const (
	RejectPermanent RejectResult = 1 // rejected-permanent
	RejectTransient RejectResult = 2 // rejected-transient
)

func (r RejectResult) String() string {
	switch r {
	case RejectPermanent:
		return "rejected-permanent"
	case RejectTransient:
		return "rejected-transient"
	}
	return fmt.Sprintf("result-%d", uint8(r))
}

// RejectSource is the Source field of A-ASSOCIATE-RJ (PS3.8 Table 9-21).
type RejectSource uint8

const (
	RejectSourceServiceUser                 RejectSource = 1 // DICOM UL service-user
	RejectSourceServiceProviderACSE         RejectSource = 2 // DICOM UL service-provider (ACSE related function)
	RejectSourceServiceProviderPresentation RejectSource = 3 // DICOM UL service-provider (Presentation related function)
)

func (s RejectSource) String() string {
	switch s {
	case RejectSourceServiceUser:
		return "service-user"
	case RejectSourceServiceProviderACSE:
		return "service-provider-acse"
	case RejectSourceServiceProviderPresentation:
		return "service-provider-presentation"
	}
	return fmt.Sprintf("source-%d", uint8(s))
}

// RejectReason is the Reason/Diag. field of A-ASSOCIATE-RJ; its meaning
// depends on the source (PS3.8 Table 9-21), so names come from
// RejectReasonName.
type RejectReason uint8

// Reasons for source 1 (service-user).
const (
	RejectUserNoReason                       RejectReason = 1
	RejectUserApplicationContextNotSupported RejectReason = 2
	RejectUserCallingAENotRecognized         RejectReason = 3
	RejectUserCalledAENotRecognized          RejectReason = 7
)

// Reasons for source 2 (service-provider, ACSE).
const (
	RejectACSENoReason                  RejectReason = 1
	RejectACSEProtocolVersionNotSupport RejectReason = 2
)

// Reasons for source 3 (service-provider, presentation).
const (
	RejectPresentationTemporaryCongestion RejectReason = 1
	RejectPresentationLocalLimitExceeded  RejectReason = 2
)

// Valid reports whether the RJ's result, source and reason are a
// combination PS3.8 Table 9-21 defines: result 1 or 2; for source 1
// reasons 1, 2, 3 and 7, for source 2 reasons 1 and 2, for source 3
// reasons 1 and 2 (the others are reserved).
func (rj *AssociateRJ) Valid() bool {
	if rj.Result != RejectPermanent && rj.Result != RejectTransient {
		return false
	}
	switch rj.Source {
	case RejectSourceServiceUser:
		switch rj.Reason {
		case RejectUserNoReason, RejectUserApplicationContextNotSupported, RejectUserCallingAENotRecognized, RejectUserCalledAENotRecognized:
			return true
		}
	case RejectSourceServiceProviderACSE:
		return rj.Reason == RejectACSENoReason || rj.Reason == RejectACSEProtocolVersionNotSupport
	case RejectSourceServiceProviderPresentation:
		return rj.Reason == RejectPresentationTemporaryCongestion || rj.Reason == RejectPresentationLocalLimitExceeded
	}
	return false
}

// String gives the number only: the name depends on the source.
func (r RejectReason) String() string { return fmt.Sprintf("reason-%d", uint8(r)) }

// RejectReasonName names a reason in the context of its source (PS3.8
// Table 9-21), spelled as policy.hcl's reject reasons are, so the audit trail
// and the configuration use one vocabulary; unassigned values are "reserved-N".
func RejectReasonName(src RejectSource, r RejectReason) string {
	switch src {
	case RejectSourceServiceUser:
		switch r {
		case RejectUserNoReason:
			return "no-reason"
		case RejectUserApplicationContextNotSupported:
			return "application-context-not-supported"
		case RejectUserCallingAENotRecognized:
			return "calling-ae-not-recognized"
		case RejectUserCalledAENotRecognized:
			return "called-ae-not-recognized"
		}
	case RejectSourceServiceProviderACSE:
		switch r {
		case RejectACSENoReason:
			return "no-reason"
		case RejectACSEProtocolVersionNotSupport:
			return "protocol-version-not-supported"
		}
	case RejectSourceServiceProviderPresentation:
		switch r {
		case RejectPresentationTemporaryCongestion:
			return "temporary-congestion"
		case RejectPresentationLocalLimitExceeded:
			return "local-limit-exceeded"
		}
	}
	return fmt.Sprintf("reserved-%d", uint8(r))
}

// AbortSource is the Source field of A-ABORT (PS3.8 9.3.8, Table 9-26).
type AbortSource uint8

const (
	AbortSourceServiceUser     AbortSource = 0 // DICOM UL service-user (initiated abort)
	AbortSourceReserved        AbortSource = 1 // reserved; some peers send it, accepted on input
	AbortSourceServiceProvider AbortSource = 2 // DICOM UL service-provider (initiated abort)
)

func (s AbortSource) String() string {
	switch s {
	case AbortSourceServiceUser:
		return "service-user"
	case AbortSourceReserved:
		return "reserved"
	case AbortSourceServiceProvider:
		return "service-provider"
	}
	return fmt.Sprintf("source-%d", uint8(s))
}

// AbortReason is the Reason/Diag. field of A-ABORT, significant only when
// the source is the service provider (PS3.8 Table 9-26).
type AbortReason uint8

const (
	AbortReasonNotSpecified       AbortReason = 0
	AbortUnrecognizedPDU          AbortReason = 1
	AbortUnexpectedPDU            AbortReason = 2
	AbortReserved3                AbortReason = 3
	AbortUnrecognizedPDUParameter AbortReason = 4
	AbortUnexpectedPDUParameter   AbortReason = 5
	AbortInvalidPDUParameterValue AbortReason = 6
)

func (r AbortReason) String() string {
	switch r {
	case AbortReasonNotSpecified:
		return "reason-not-specified"
	case AbortUnrecognizedPDU:
		return "unrecognized-pdu"
	case AbortUnexpectedPDU:
		return "unexpected-pdu"
	case AbortReserved3:
		return "reserved"
	case AbortUnrecognizedPDUParameter:
		return "unrecognized-pdu-parameter"
	case AbortUnexpectedPDUParameter:
		return "unexpected-pdu-parameter"
	case AbortInvalidPDUParameterValue:
		return "invalid-pdu-parameter-value"
	}
	return fmt.Sprintf("reason-%d", uint8(r))
}

// PCResult is the Result/Reason field of a presentation context item in an
// A-ASSOCIATE-AC (PS3.8 9.3.3.2, Table 9-18).
type PCResult uint8

const (
	PCAcceptance                 PCResult = 0
	PCUserRejection              PCResult = 1
	PCProviderRejection          PCResult = 2 // no reason (provider rejection)
	PCAbstractSyntaxNotSupported PCResult = 3 // provider rejection
	PCTransferSyntaxNotSupported PCResult = 4 // transfer-syntaxes-not-supported (provider rejection)
)

func (r PCResult) String() string {
	switch r {
	case PCAcceptance:
		return "acceptance"
	case PCUserRejection:
		return "user-rejection"
	case PCProviderRejection:
		return "no-reason"
	case PCAbstractSyntaxNotSupported:
		return "abstract-syntax-not-supported"
	case PCTransferSyntaxNotSupported:
		return "transfer-syntaxes-not-supported"
	}
	return fmt.Sprintf("result-%d", uint8(r))
}

// UserIdentityType is the User-Identity-Type of sub-item 0x58 (PS3.7 D.3.3.7).
type UserIdentityType uint8

const (
	UserIdentityUsername         UserIdentityType = 1
	UserIdentityUsernamePasscode UserIdentityType = 2
	UserIdentityKerberos         UserIdentityType = 3
	UserIdentitySAML             UserIdentityType = 4
	UserIdentityJWT              UserIdentityType = 5
)

// Known reports whether u is a type PS3.7 D.3.3.7 defines.
func (u UserIdentityType) Known() bool { return u >= UserIdentityUsername && u <= UserIdentityJWT }

func (u UserIdentityType) String() string {
	switch u {
	case UserIdentityUsername:
		return "username"
	case UserIdentityUsernamePasscode:
		return "username-passcode"
	case UserIdentityKerberos:
		return "kerberos"
	case UserIdentitySAML:
		return "saml"
	case UserIdentityJWT:
		return "jwt"
	}
	return fmt.Sprintf("type-%d", uint8(u))
}
