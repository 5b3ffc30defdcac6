package inspect

import (
	"testing"

	"github.com/dicomedge/dicomedge/association/dimse"
)

// BenchmarkInspectorDataPDU: the relay's common case, one P-DATA-TF of a
// C-STORE data set judged and passed unchanged.
func BenchmarkInspectorDataPDU(b *testing.B) {
	in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) { c.ScanPatientID = false })
	if v := in.Feed(Requestor, pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)))); !v.Pass {
		b.Fatal(v)
	}
	p := pdu(dataPDV(ctxCT, false, make([]byte, 16<<10-12)))
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if v := in.Feed(Requestor, p); !v.Pass {
			b.Fatal(v)
		}
		in.Release(Requestor)
	}
}

// BenchmarkInspectorStore: a whole C-STORE (command, 512 KiB in 32 PDUs,
// response) through a fresh Inspector.
func BenchmarkInspectorStore(b *testing.B) {
	cmd := pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)))
	data := pdu(dataPDV(ctxCT, false, make([]byte, 16<<10-12)))
	last := pdu(dataPDV(ctxCT, true, make([]byte, 16<<10-12)))
	rspPDU := pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0)))
	b.SetBytes(int64(32 * len(data)))
	b.ReportAllocs()
	for b.Loop() {
		in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) { c.ScanPatientID = false })
		in.Feed(Requestor, cmd)
		for range 31 {
			in.Feed(Requestor, data)
		}
		in.Feed(Requestor, last)
		if v := in.Feed(Acceptor, rspPDU); len(v.Records) != 1 {
			b.Fatal(v)
		}
	}
}
