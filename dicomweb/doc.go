// Package dicomweb is the edge's DICOMweb client: STOW-RS (PS3.18 10.5),
// posting spooled Part 10 files as multipart/related; type="application/dicom"
// requests of several instances, and reading the response's Failed SOP
// Sequence per instance. It authenticates with a bearer token file (read
// again whenever it changes) or the OAuth 2.0 client credentials grant, over
// a TLS configuration from tlslayer (mutual TLS when a client certificate is
// given). It knows nothing of the spool's layout: it sends the files it is
// handed and classifies each outcome as delivered, transient or permanent.
package dicomweb
