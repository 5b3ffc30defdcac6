package dicomweb

import (
	"testing"

	"github.com/dicomedge/dicomedge/spool"
)

func TestClassifyReadsFailedSOPSequencePerInstance(t *testing.T) {
	body := []byte(`{
	  "00081198": {"vr": "SQ", "Value": [
	    {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]}, "00081155": {"vr": "UI", "Value": ["2.25.2"]}, "00081197": {"vr": "US", "Value": [49152]}},
	    {"00081155": {"vr": "UI", "Value": ["2.25.3"]}, "00081197": {"vr": "US", "Value": [42752]}}
	  ]},
	  "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["2.25.1"]}}]}
	}`)
	r := Classify(202, body)
	if err := r.For("2.25.1"); err != nil {
		t.Errorf("stored instance: %v", err)
	}
	if err := r.For("2.25.2"); err == nil || !spool.IsPermanent(err) {
		t.Errorf("0xC000: %v, want permanent", err)
	}
	if err := r.For("2.25.3"); err == nil || spool.IsPermanent(err) {
		t.Errorf("0xA700: %v, want transient", err)
	}
	if err := r.For("2.25.9"); err == nil || spool.IsPermanent(err) {
		t.Errorf("unnamed in a 202: %v, want transient (not known stored)", err)
	}
	for _, tc := range []struct {
		status    int
		delivered bool
		permanent bool
	}{
		{200, true, false}, {401, false, false}, {403, false, false}, {408, false, false}, {429, false, false},
		{503, false, false}, {400, false, true}, {413, false, true}, {415, false, true}, {409, false, true},
	} {
		err := Classify(tc.status, []byte("<html>oops</html>")).For("2.25.1")
		if (err == nil) != tc.delivered || (err != nil && spool.IsPermanent(err) != tc.permanent) {
			t.Errorf("HTTP %d: %v (delivered %v, permanent %v wanted)", tc.status, err, tc.delivered, tc.permanent)
		}
	}
}

func FuzzParseStoreResponse(f *testing.F) {
	f.Add([]byte(`{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1"]},"00081197":{"vr":"US","Value":[272]}}]}}`))
	f.Add([]byte(`[{"00081199":{"vr":"SQ","Value":[{}]}}]`))
	f.Add([]byte(`{"00081198":{"Value":[1,"x",null]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Classify(202, b)
		for uid := range r.Failed {
			_ = r.For(uid)
		}
	})
}
