// Package policytool holds what an administrator runs around policy.hcl
// before a change goes live: Format (the canonical layout, hcl/v2's own
// hclwrite.Format), the policy test cases of `dicomedge policy test`
// (decoded with gohcl, run against a compiled policy.Config) and Replay,
// which re-decides the associations and DIMSE requests of an audit log under
// a new policy and reports what would change. README.md "Changing the policy
// safely" is the workflow these serve.
package policytool
