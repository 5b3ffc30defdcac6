// Package policy owns policy.hcl: the schema of the whole configuration
// (edge, tls with acme, audit with syslog, backends and rules), decoded with
// hcl/v2's gohcl and validated into hcl.Diagnostics that point at the exact
// value, printed as file:line:col by WriteDiagnostics. Load compiles the rules
// once into an immutable Policy whose Evaluate does no I/O and, in practice,
// no allocation; Explain says why each rule did or did not match; Store swaps
// a fully validated new Config in atomically on reload. It imports none of
// the other dicomedge packages.
package policy
