package policy

var (
	patientIDModes = []string{"omit", "hash", "plain"}
	onFullModes    = []string{"block", "drop"}
	syslogFormats  = []string{"atna", "json"}
)

func (l *loader) audit(s *auditSchema, a *Audit) {
	if s == nil {
		s = &auditSchema{}
	}
	a.File = l.filePath(s.File, "audit.file", DefaultAuditFile)
	v, ok := l.str(s.PatientIDs, "hash")
	if ok && !l.enum(v, "patient_ids mode", patientIDModes) {
		v.s = "hash"
	}
	a.PatientIDs = v.s
	a.Fsync = l.duration(s.Fsync, "audit.fsync", DefaultFsync, true)
	v, ok = l.str(s.OnFull, "block")
	if ok && !l.enum(v, "on_full mode", onFullModes) {
		v.s = "block"
	}
	a.OnFull = v.s
	if syslog := first(l, s.Syslog, "syslog"); syslog != nil {
		sl := &Syslog{}
		if v, ok := l.str(syslog.Address, ""); ok {
			l.hostPort(v, "audit.syslog.address", false)
			sl.Address = v.s
		} else if syslog.Address == nil {
			l.errorf(syslog.DefRange, "Missing address", "audit.syslog needs address = \"host:port\" of the collector (RFC 5425, usually port 6514).")
		}
		v, ok := l.str(syslog.Format, "atna")
		if ok {
			l.enum(v, "syslog format", syslogFormats)
		}
		sl.Format = v.s
		sl.CA = l.paths(syslog.CA, "audit.syslog.ca")
		sl.CertFile = l.filePath(syslog.CertFile, "audit.syslog.cert_file", "")
		sl.KeyFile = l.filePath(syslog.KeyFile, "audit.syslog.key_file", "")
		switch {
		case syslog.CertFile != nil && syslog.KeyFile == nil:
			l.errorf(syslog.CertFile.Range, "Missing key_file", "audit.syslog.cert_file needs audit.syslog.key_file, the file with its private key.")
		case syslog.KeyFile != nil && syslog.CertFile == nil:
			l.errorf(syslog.KeyFile.Range, "Missing cert_file", "audit.syslog.key_file needs audit.syslog.cert_file, the certificate it belongs to.")
		}
		a.Syslog = sl
	}
}
