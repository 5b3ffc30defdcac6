package dimse

import "fmt"

// CommandField is the value of (0000,0100) (PS3.7 E.1, Table E.1-1).
type CommandField uint16

// Command field values, PS3.7 Annex E.
const (
	CStoreRQ        CommandField = 0x0001
	CStoreRSP       CommandField = 0x8001
	CGetRQ          CommandField = 0x0010
	CGetRSP         CommandField = 0x8010
	CFindRQ         CommandField = 0x0020
	CFindRSP        CommandField = 0x8020
	CMoveRQ         CommandField = 0x0021
	CMoveRSP        CommandField = 0x8021
	CEchoRQ         CommandField = 0x0030
	CEchoRSP        CommandField = 0x8030
	NEventReportRQ  CommandField = 0x0100
	NEventReportRSP CommandField = 0x8100
	NGetRQ          CommandField = 0x0110
	NGetRSP         CommandField = 0x8110
	NSetRQ          CommandField = 0x0120
	NSetRSP         CommandField = 0x8120
	NActionRQ       CommandField = 0x0130
	NActionRSP      CommandField = 0x8130
	NCreateRQ       CommandField = 0x0140
	NCreateRSP      CommandField = 0x8140
	NDeleteRQ       CommandField = 0x0150
	NDeleteRSP      CommandField = 0x8150
	CCancelRQ       CommandField = 0x0FFF
)

var serviceNames = map[CommandField]string{
	CStoreRQ: "C-STORE", CGetRQ: "C-GET", CFindRQ: "C-FIND", CMoveRQ: "C-MOVE", CEchoRQ: "C-ECHO",
	NEventReportRQ: "N-EVENT-REPORT", NGetRQ: "N-GET", NSetRQ: "N-SET", NActionRQ: "N-ACTION",
	NCreateRQ: "N-CREATE", NDeleteRQ: "N-DELETE", CCancelRQ: "C-CANCEL",
}

// Known reports whether f is a command field PS3.7 defines.
func (f CommandField) Known() bool {
	if f == CCancelRQ {
		return true
	}
	_, ok := serviceNames[f&^0x8000]
	return ok && f&^0x8000 != CCancelRQ
}

// IsRequest reports whether f is a request (RQ) rather than a response.
func (f CommandField) IsRequest() bool { return f&0x8000 == 0 }

// Service names the DIMSE service, e.g. "C-STORE", or "" if unknown.
func (f CommandField) Service() string {
	if !f.Known() {
		return ""
	}
	return serviceNames[f&^0x8000]
}

// Response returns the response command field for a request.
func (f CommandField) Response() CommandField { return f | 0x8000 }

// DataSet says whether a message of f carries a data set, by the Data Set
// row of its message table (PS3.7 9.3, 10.3): required (C-STORE, C-FIND,
// C-GET and C-MOVE requests carry the instance or identifier, N-SET-RQ its
// modification list) or allowed at all (C-ECHO, C-CANCEL, N-GET-RQ,
// N-DELETE and C-STORE-RSP have none). An unknown field allows one.
func (f CommandField) DataSet() (required, allowed bool) {
	switch f {
	case CStoreRQ, CFindRQ, CGetRQ, CMoveRQ, NSetRQ:
		return true, true
	case CStoreRSP, CEchoRQ, CEchoRSP, CCancelRQ, NGetRQ, NDeleteRQ, NDeleteRSP:
		return false, false
	}
	return false, true
}

// HasPending reports whether responses of f's service may have a pending
// status: only C-FIND, C-GET and C-MOVE answer one request with several
// responses (PS3.4 C.4.1.3, C.4.2.3, C.4.3.3).
func (f CommandField) HasPending() bool {
	switch f | 0x8000 {
	case CFindRSP, CGetRSP, CMoveRSP:
		return true
	}
	return false
}

func (f CommandField) String() string {
	if !f.Known() {
		return fmt.Sprintf("command-0x%04x", uint16(f))
	}
	if f.IsRequest() {
		return f.Service() + "-RQ"
	}
	return f.Service() + "-RSP"
}

// Tags of the command set, group 0000 (PS3.7 E.1), as group<<16|element.
const (
	TagCommandGroupLength                   uint32 = 0x00000000
	TagAffectedSOPClassUID                  uint32 = 0x00000002
	TagRequestedSOPClassUID                 uint32 = 0x00000003
	TagCommandField                         uint32 = 0x00000100
	TagMessageID                            uint32 = 0x00000110
	TagMessageIDBeingRespondedTo            uint32 = 0x00000120
	TagMoveDestination                      uint32 = 0x00000600
	TagPriority                             uint32 = 0x00000700
	TagCommandDataSetType                   uint32 = 0x00000800
	TagStatus                               uint32 = 0x00000900
	TagOffendingElement                     uint32 = 0x00000901
	TagErrorComment                         uint32 = 0x00000902
	TagErrorID                              uint32 = 0x00000903
	TagAffectedSOPInstanceUID               uint32 = 0x00001000
	TagRequestedSOPInstanceUID              uint32 = 0x00001001
	TagEventTypeID                          uint32 = 0x00001002
	TagAttributeIdentifierList              uint32 = 0x00001005
	TagActionTypeID                         uint32 = 0x00001008
	TagNumberOfRemainingSuboperations       uint32 = 0x00001020
	TagNumberOfCompletedSuboperations       uint32 = 0x00001021
	TagNumberOfFailedSuboperations          uint32 = 0x00001022
	TagNumberOfWarningSuboperations         uint32 = 0x00001023
	TagMoveOriginatorApplicationEntityTitle uint32 = 0x00001030
	TagMoveOriginatorMessageID              uint32 = 0x00001031
)

// Priority values of (0000,0700).
const (
	PriorityMedium uint16 = 0x0000
	PriorityHigh   uint16 = 0x0001
	PriorityLow    uint16 = 0x0002
)

// NoDataSet is the CommandDataSetType value meaning no data set follows
// (PS3.7 E.1: any other value means one does).
const NoDataSet uint16 = 0x0101

// DataSetPresent is the value commonly sent when a data set follows.
const DataSetPresent uint16 = 0x0000
