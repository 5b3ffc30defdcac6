package dimse

import (
	"io"
	"os"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

func BenchmarkDecodeCommand(b *testing.B) {
	raw, err := os.ReadFile("testdata/c-store-rq-storescu-xs.bin")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCommand(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteMessage512KiB(b *testing.B) {
	cmd := &Command{CommandField: CStoreRQ, MessageID: 1, AffectedSOPClassUID: association.CTImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: DataSetPresent}
	data := make([]byte, 512<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteMessage(io.Discard, 1, cmd, data, 16384); err != nil {
			b.Fatal(err)
		}
	}
}
