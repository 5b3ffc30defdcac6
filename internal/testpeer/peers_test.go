package testpeer

import (
	"bytes"
	"testing"
	"time"
)

// The generated files must survive a plain DCMTK store byte for byte,
// otherwise the relay's byte-identity tests would prove nothing.
func TestGeneratedFilesRoundTripThroughStoreSCP(t *testing.T) {
	Require(t, "storescu", "storescp")
	scp := StartStoreSCP(t, "STORESCP")
	paths, want := WriteDICOMFiles(t, t.TempDir(), "PAT1", 3, 64, 64)
	ctx := Context(t, time.Minute)
	args := append([]string{"-aet", "TESTSCU", "-aec", "STORESCP", Host(scp.Addr), itoa(Port(scp.Addr))}, paths...)
	if out, err := Run(ctx, "storescu", args...); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	got := scp.Received(t)
	if len(got) != len(want) {
		t.Fatalf("received %d instances, want %d", len(got), len(want))
	}
	for uid, ds := range want {
		if !bytes.Equal(got[uid], ds) {
			t.Errorf("instance %s: data set differs (got %d bytes, want %d)", uid, len(got[uid]), len(ds))
		}
	}
}

func TestOrthancStarts(t *testing.T) {
	o := StartOrthanc(t, "ORTHANC", nil)
	ctx := Context(t, 30*time.Second)
	if out, err := Run(ctx, "echoscu", "-aet", "T", "-aec", o.AETitle, Host(o.DICOM), itoa(Port(o.DICOM))); err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}
}
