package dimse

// Status values of (0000,0900) (PS3.7 Annex C and the service annexes of PS3.4).
const (
	StatusSuccess                   uint16 = 0x0000
	StatusWarning                   uint16 = 0x0001
	StatusAttributeListError        uint16 = 0x0107 // warning
	StatusAttributeValueOutOfRange  uint16 = 0x0116 // warning
	StatusCoercionOfDataElements    uint16 = 0xB000 // warning (C-STORE)
	StatusSOPClassNotSupported      uint16 = 0x0122
	StatusClassInstanceConflict     uint16 = 0x0119
	StatusDuplicateSOPInstance      uint16 = 0x0111
	StatusDuplicateInvocation       uint16 = 0x0210
	StatusInvalidArgumentValue      uint16 = 0x0115
	StatusInvalidAttributeValue     uint16 = 0x0106
	StatusInvalidObjectInstance     uint16 = 0x0117
	StatusMissingAttribute          uint16 = 0x0120
	StatusMissingAttributeValue     uint16 = 0x0121
	StatusMistypedArgument          uint16 = 0x0212
	StatusNoSuchArgument            uint16 = 0x0114
	StatusNoSuchAttribute           uint16 = 0x0105
	StatusNoSuchEventType           uint16 = 0x0113
	StatusNoSuchObjectInstance      uint16 = 0x0112
	StatusNoSuchSOPClass            uint16 = 0x0118
	StatusProcessingFailure         uint16 = 0x0110
	StatusResourceLimitation        uint16 = 0x0213
	StatusUnrecognizedOperation     uint16 = 0x0211
	StatusNoSuchActionType          uint16 = 0x0123
	StatusRefusedNotAuthorized      uint16 = 0x0124
	StatusRefusedOutOfResources     uint16 = 0xA700 // C-STORE/C-FIND/C-MOVE/C-GET
	StatusRefusedMoveDestUnknown    uint16 = 0xA801 // C-MOVE
	StatusIdentifierDoesNotMatchSOP uint16 = 0xA900 // C-FIND/C-MOVE/C-GET
	// StatusDataSetMismatch is C-STORE's 0xA900, "Data Set does not match
	// SOP Class" (PS3.4 B.2.3).
	StatusDataSetMismatch            uint16 = 0xA900
	StatusUnableToProcess            uint16 = 0xC000
	StatusCancel                     uint16 = 0xFE00
	StatusPending                    uint16 = 0xFF00
	StatusPendingOptionalKeysMissing uint16 = 0xFF01
)

// StatusClass is the category of a status (PS3.7 C.1).
type StatusClass uint8

const (
	ClassSuccess StatusClass = iota
	ClassWarning
	ClassFailure
	ClassCancel
	ClassPending
)

func (c StatusClass) String() string {
	switch c {
	case ClassSuccess:
		return "success"
	case ClassWarning:
		return "warning"
	case ClassCancel:
		return "cancel"
	case ClassPending:
		return "pending"
	}
	return "failure"
}

// ClassOf classifies a status: 0x0000 success; 0x0001, 0x0107, 0x0116 and
// 0xBxxx warning; 0xFE00 cancel; 0xFF00/0xFF01 pending; everything else
// (0xAxxx, 0xCxxx, 0x01xx, 0x02xx and unknown values) failure, the safe
// reading of a value we do not know.
func ClassOf(status uint16) StatusClass {
	switch {
	case status == StatusSuccess:
		return ClassSuccess
	case status == StatusWarning, status == StatusAttributeListError, status == StatusAttributeValueOutOfRange,
		status&0xF000 == 0xB000:
		return ClassWarning
	case status == StatusCancel:
		return ClassCancel
	case status == StatusPending, status == StatusPendingOptionalKeysMissing:
		return ClassPending
	}
	return ClassFailure
}
