package policytool

import (
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// RecordExplanation is one association record decided again with a policy:
// what the log says was decided, what the policy decides now and why, rule
// by rule (the console's "explain").
type RecordExplanation struct {
	Old, New Outcome
	Changed  bool
	// Explanation is the new decision with every rule tried.
	Explanation policy.Explanation
	Input       policy.Input
	// NotReplayed says why the record cannot be decided again without
	// guessing (then only Old is set).
	NotReplayed string
}

// ExplainRecord decides the association record e (association.accepted or
// association.rejected) again under cfg, as `dicomedge policy replay` does.
func ExplainRecord(cfg *policy.Config, e *audit.Event) RecordExplanation {
	var x RecordExplanation
	x.Old, _ = oldOutcome(e)
	listener := e.Listener
	if listener == "" {
		listener = EdgeListener
	}
	in, why := input(cfg, listener, e)
	if why != "" {
		x.NotReplayed = why
		return x
	}
	in.Listener = listener
	x.Input = in
	_, oldAction := oldOutcome(e)
	d := Evaluate(cfg, listener, &in)
	x.New = newOutcome(&d)
	x.Changed = !sameOutcome(x.Old, oldAction, &d)
	x.Explanation = cfg.Policy.Explain(&in)
	return x
}
