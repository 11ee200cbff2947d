package health

import "context"

// Probe runs one probe of s now and reports whether it succeeded and, for a
// person, what happened. The leader uses it to tell whether a task on a lost
// worker still answers.
func Probe(ctx context.Context, s Spec) (bool, string) {
	p := newProber(normalize(s))
	defer p.close()
	return p.probe(ctx)
}
