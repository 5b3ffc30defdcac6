package association

// UIDs from PS3.6 Annex A used by the Upper Layer and the edge.
const (
	DICOMApplicationContext = "1.2.840.10008.3.1.1.1"
	VerificationSOPClass    = "1.2.840.10008.1.1"

	ImplicitVRLittleEndian         = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian         = "1.2.840.10008.1.2.1"
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian            = "1.2.840.10008.1.2.2"
	JPEGBaseline8Bit               = "1.2.840.10008.1.2.4.50"
	JPEGLosslessSV1                = "1.2.840.10008.1.2.4.70"
	JPEG2000Lossless               = "1.2.840.10008.1.2.4.90"
	JPEG2000                       = "1.2.840.10008.1.2.4.91"
	RLELossless                    = "1.2.840.10008.1.2.5"

	CTImageStorage               = "1.2.840.10008.5.1.4.1.1.2"
	MRImageStorage               = "1.2.840.10008.5.1.4.1.1.4"
	SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"
	PatientRootQueryRetrieveFind = "1.2.840.10008.5.1.4.1.2.1.1"
	PatientRootQueryRetrieveMove = "1.2.840.10008.5.1.4.1.2.1.2"
	PatientRootQueryRetrieveGet  = "1.2.840.10008.5.1.4.1.2.1.3"
	StudyRootQueryRetrieveFind   = "1.2.840.10008.5.1.4.1.2.2.1"
	StudyRootQueryRetrieveMove   = "1.2.840.10008.5.1.4.1.2.2.2"
	StudyRootQueryRetrieveGet    = "1.2.840.10008.5.1.4.1.2.2.3"
)
