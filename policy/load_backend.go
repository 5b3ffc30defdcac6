package policy

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// backends builds the backends and returns their names in file order.
func (l *loader) backends(list []*backendSchema, out map[string]*Backend) []string {
	seen := map[string]hcl.Range{}
	var order []string
	for _, s := range list {
		if s.Name == "" {
			l.errorf(s.NameRange, "Empty backend name", "A backend needs a name, like backend \"pacs\".")
			continue
		}
		// A duplicate is still checked, so its own mistakes are reported too.
		prev, dup := seen[s.Name]
		if dup {
			l.errorf(s.NameRange, "Duplicate backend name", "A backend named %q is already defined at %s.", s.Name, at(prev))
		} else {
			seen[s.Name] = s.NameRange
		}
		b := &Backend{Name: s.Name}
		web := first(l, s.DICOMweb, "dicomweb")
		if web != nil {
			b.DICOMweb = l.dicomweb(s.Name, web)
			if s.Address != nil {
				l.errorf(s.Address.Range, "Address with dicomweb", "backend %q is a DICOMweb destination: its url says where it is; remove address.", s.Name)
			}
			if len(s.TLS) > 0 {
				l.errorf(s.TLS[0].DefRange, "tls with dicomweb", "backend %q is a DICOMweb destination: its TLS settings (ca, cert_file, key_file) go in the dicomweb block.", s.Name)
			}
			if v, ok := l.str(s.AETitle, ""); ok {
				b.AETitle, _ = l.aeTitle(v, fmt.Sprintf("backend %q ae_title", s.Name))
			}
			if !dup {
				out[s.Name] = b
				order = append(order, s.Name)
			}
			continue
		}
		if v, ok := l.str(s.Address, ""); ok {
			l.hostPort(v, fmt.Sprintf("backend %q address", s.Name), false)
			b.Address = v.s
		} else if s.Address == nil {
			l.errorf(s.DefRange, "Missing address", "backend %q needs address = \"host:port\" of the PACS (or a dicomweb block for a DICOMweb destination).", s.Name)
		}
		if v, ok := l.str(s.AETitle, ""); ok {
			b.AETitle, _ = l.aeTitle(v, fmt.Sprintf("backend %q ae_title", s.Name))
		} else if s.AETitle == nil {
			l.errorf(s.DefRange, "Missing ae_title", "backend %q needs ae_title, the PACS's AE title: the edge rewrites the called AE title to it.", s.Name)
		}
		if t := first(l, s.TLS, "tls"); t != nil {
			what := fmt.Sprintf("backend %q tls", s.Name)
			bt := &BackendTLS{
				CA:       l.paths(t.CA, what+".ca"),
				CertFile: l.filePath(t.CertFile, what+".cert_file", ""),
				KeyFile:  l.filePath(t.KeyFile, what+".key_file", ""),
			}
			switch {
			case t.CertFile != nil && t.KeyFile == nil:
				l.errorf(t.CertFile.Range, "Missing key_file", "%s.cert_file needs key_file, the file with its private key.", what)
			case t.KeyFile != nil && t.CertFile == nil:
				l.errorf(t.KeyFile.Range, "Missing cert_file", "%s.key_file needs cert_file, the certificate it belongs to.", what)
			}
			if v, ok := l.str(t.ServerName, ""); ok {
				bt.ServerName = v.s
			}
			b.TLS = bt
		}
		if !dup {
			out[s.Name] = b
			order = append(order, s.Name)
		}
	}
	return order
}
