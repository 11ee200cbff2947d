package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
)

// This file works out what cube apply (and cube service update) will change,
// as nomad job plan does: a pure function of what the cluster has and what
// the file wants, so that the plan printed is the plan applied.

// The actions of a plan's steps.
const (
	planCreate    = "create"    // a service the cluster does not have
	planUpdate    = "update"    // a service whose template, count or update policy changes
	planUnchanged = "unchanged" // a service the cluster has as the file says
	planSubmit    = "submit"    // a task the cluster does not know
	planKnown     = "known"     // a task whose ID the cluster knows: nothing is run
)

// planStep is one line of a plan.
type planStep struct {
	// Action is one of the plan* constants.
	Action string
	// Kind is "service" or "task"; Name the service's name or the task's
	// label (taskLabel).
	Kind string
	Name string
	// Changes lists what changes, as "Field old → new" ("Env changed" for
	// the values not shown).
	Changes []string `json:",omitempty"`
	// Rollout is set when the change makes a new version of the service,
	// which replaces the running tasks MaxParallel at a time; a change of
	// Count alone scales at once, and of the update policy alone is kept
	// for the next rollout.
	Rollout     bool `json:",omitempty"`
	MaxParallel int  `json:",omitempty"`
	// State is the known task's state (Action known).
	State string `json:",omitempty"`

	item manifestItem
}

// String is the step as the plan prints it.
func (s planStep) String() string {
	switch s.Action {
	case planCreate:
		sv := s.item.Service
		return fmt.Sprintf("+ create service %s (%d × %s)", s.Name, sv.Count, sv.Task.Image)
	case planUpdate:
		how := "no new version"
		if s.Rollout {
			how = fmt.Sprintf("rolling, %d at a time", s.MaxParallel)
		} else if slices.ContainsFunc(s.Changes, func(c string) bool { return strings.HasPrefix(c, "Count ") }) {
			how = "scaled at once, no new version"
		}
		return fmt.Sprintf("~ update service %s: %s (%s)", s.Name, strings.Join(s.Changes, ", "), how)
	case planUnchanged:
		return "  unchanged service " + s.Name
	case planSubmit:
		ev := s.item.Task
		return fmt.Sprintf("+ submit task %s (%s)", s.Name, ev.Task.Image)
	case planKnown:
		return fmt.Sprintf("  task %s is known to the cluster (%s): nothing new runs; give it another ID to run it again", s.Name, s.State)
	}
	return s.Action + " " + s.Kind + " " + s.Name
}

// planSummary is the plan's last line.
func planSummary(steps []planStep) string {
	n := map[string]int{}
	for _, s := range steps {
		n[s.Action]++
	}
	var parts []string
	for _, a := range []struct {
		action, words string
	}{{planCreate, "service(s) to create"}, {planUpdate, "to update"}, {planUnchanged, "unchanged"},
		{planSubmit, "task(s) to submit"}, {planKnown, "known task(s)"}} {
		if n[a.action] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[a.action], a.words))
		}
	}
	return "Plan: " + strings.Join(parts, ", ") + "."
}

// planChanges reports whether a plan changes anything.
func planChanges(steps []planStep) bool {
	return slices.ContainsFunc(steps, func(s planStep) bool {
		return s.Action == planCreate || s.Action == planUpdate || s.Action == planSubmit
	})
}

// computePlan compares what the file wants (items, in file order) with the
// services the cluster has and, for tasks given an ID, the tasks it knows
// (known: by ID, its state).
func computePlan(current []api.ServiceStatus, known map[string]api.State, items []manifestItem) []planStep {
	byName := map[string]api.Service{}
	for _, st := range current {
		byName[st.Name] = st.Service
	}
	var steps []planStep
	for _, it := range items {
		if it.Task != nil {
			step := planStep{Action: planSubmit, Kind: kindTask, Name: taskLabel(*it.Task), item: it}
			if it.Task.ID != [16]byte{} {
				if st, ok := known[it.Task.ID.String()]; ok {
					step.Action, step.State = planKnown, st.String()
				}
			}
			steps = append(steps, step)
			continue
		}
		want := *it.Service
		step := planStep{Kind: kindService, Name: want.Name, item: it}
		cur, ok := byName[want.Name]
		if !ok {
			step.Action = planCreate
			steps = append(steps, step)
			continue
		}
		step.Changes, step.Rollout = serviceChanges(cur, want)
		step.Action = planUnchanged
		if len(step.Changes) > 0 {
			step.Action = planUpdate
		}
		if step.Rollout {
			step.MaxParallel = cmp.Or(max(want.Update.MaxParallel, 0), api.DefaultMaxParallel)
		}
		steps = append(steps, step)
	}
	return steps
}

// serviceChanges lists what differs between the cluster's service and the
// file's, and whether the template changed (a new version, a rollout). It
// compares as the cluster does (fsm's putService): the templates as
// fsm.ServiceTemplate makes them, Count and Update as they are.
func serviceChanges(cur, want api.Service) (changes []string, rollout bool) {
	a, b := fsm.ServiceTemplate(cur), fsm.ServiceTemplate(want)
	if rollout = !fsm.SameTemplate(a, b); rollout {
		changes = fieldChanges("", reflect.ValueOf(a), reflect.ValueOf(b))
		if len(changes) == 0 {
			changes = []string{"Task changed"}
		}
	}
	if cur.Count != want.Count {
		changes = append(changes, fmt.Sprintf("Count %d → %d", cur.Count, want.Count))
	}
	changes = append(changes, fieldChanges("Update.", reflect.ValueOf(cur.Update), reflect.ValueOf(want.Update))...)
	return changes, rollout
}

// secretFields are not shown, only said to change.
var secretFields = map[string]bool{"Env": true}

// fieldChanges compares two structs field by field ("Image a → b"); a nil
// list or map equals an empty one.
func fieldChanges(prefix string, a, b reflect.Value) []string {
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		x, y := a.Field(i), b.Field(i)
		if emptyish(x) && emptyish(y) || reflect.DeepEqual(x.Interface(), y.Interface()) {
			continue
		}
		name := prefix + f.Name
		switch {
		case secretFields[f.Name]:
			out = append(out, name+" changed (values not shown)")
		case f.Name == "Memory" || f.Name == "Disk":
			out = append(out, fmt.Sprintf("%s %s → %s", name, bytesHuman(x.Int()), bytesHuman(y.Int())))
		default:
			out = append(out, fmt.Sprintf("%s %s → %s", name, valueText(x), valueText(y)))
		}
	}
	return out
}

func emptyish(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	}
	return v.IsZero()
}

// valueText shows a value in a plan line: strings as they are ("" when
// empty), the rest as JSON.
func valueText(v reflect.Value) string {
	if v.Kind() == reflect.String {
		if v.String() == "" {
			return `""`
		}
		return v.String()
	}
	if emptyish(v) && (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) {
		return "none"
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return fmt.Sprint(v.Interface())
	}
	return string(b)
}
