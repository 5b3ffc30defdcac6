// Package policy owns policy.hcl: its schema (hcl/v2), diagnostics with
// file:line:col, the compiled, immutable rule set, Evaluate and Explain.
// Evaluating a decision does no I/O.
package policy
