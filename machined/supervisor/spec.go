package supervisor

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// RestartPolicy says when a service that exited is started again.
type RestartPolicy string

// Restart policies. The empty policy means RestartAlways.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Service kinds. They are informational for the supervisor; the empty kind
// means KindSystem.
const (
	KindSystem    = "system"
	KindExtension = "extension"
)

// HealthCheck describes how to probe a running service. When both Exec and
// TCP are set, both must pass.
type HealthCheck struct {
	// Exec is a command (argv) that must exit 0; it runs with the service's
	// environment and working directory in its own process group.
	Exec []string
	// TCP is a host:port that must accept a connection.
	TCP string
	// Interval between checks (default 5s); the first check runs as soon as
	// the process has started.
	Interval time.Duration
	// Timeout of one check (default: Interval, at most 5s).
	Timeout time.Duration
}

// Spec describes one supervised service.
type Spec struct {
	// ID names the service; it is also the log file name, so it may hold
	// only letters, digits, '.', '_' and '-' and may not start with '.'.
	ID string
	// Kind is "system" or "extension".
	Kind    string
	Command string
	Args    []string
	// Env holds KEY=VALUE entries added to Options.BaseEnv (overriding it).
	Env []string
	// Dir is the working directory ("/" when empty).
	Dir       string
	DependsOn []string
	Restart   RestartPolicy
	Health    *HealthCheck
	// NeedsTime holds the service back until Options.TimeReady is closed
	// (the clock was synced, or the wait for it timed out): for services
	// that check certificates.
	NeedsTime bool
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*$`)

// normalize fills defaults and turns empty slices into nil so that two specs
// that mean the same compare equal.
func normalize(sp Spec) Spec {
	if sp.Kind == "" {
		sp.Kind = KindSystem
	}
	if sp.Restart == "" {
		sp.Restart = RestartAlways
	}
	nilIfEmpty := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return slices.Clone(s)
	}
	sp.Args = nilIfEmpty(sp.Args)
	sp.Env = nilIfEmpty(sp.Env)
	sp.DependsOn = nilIfEmpty(sp.DependsOn)
	if sp.Health != nil {
		h := *sp.Health
		h.Exec = nilIfEmpty(h.Exec)
		sp.Health = &h
	}
	return sp
}

// validate checks a whole set of specs: each one on its own, unique IDs,
// known dependencies and no dependency cycle. It returns the normalized
// specs by ID.
func validate(specs []Spec) (map[string]Spec, error) {
	byID := make(map[string]Spec, len(specs))
	var errs []error
	for i, sp := range specs {
		sp = normalize(sp)
		if err := validateOne(sp); err != nil {
			errs = append(errs, fmt.Errorf("services[%d]: %w", i, err))
			continue
		}
		if _, dup := byID[sp.ID]; dup {
			errs = append(errs, fmt.Errorf("services[%d]: duplicate service id %q", i, sp.ID))
			continue
		}
		byID[sp.ID] = sp
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, id := range sortedIDs(byID) {
		for _, d := range byID[id].DependsOn {
			if _, ok := byID[d]; !ok {
				errs = append(errs, fmt.Errorf("service %q: depends on unknown service %q", id, d))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if _, err := startOrder(byID); err != nil {
		return nil, err
	}
	return byID, nil
}

func validateOne(sp Spec) error {
	if !idPattern.MatchString(sp.ID) {
		return fmt.Errorf("id %q: use letters, digits, '.', '_' and '-', not starting with '.'", sp.ID)
	}
	if sp.Kind != KindSystem && sp.Kind != KindExtension {
		return fmt.Errorf("service %q: kind %q: want %q or %q", sp.ID, sp.Kind, KindSystem, KindExtension)
	}
	if sp.Command == "" {
		return fmt.Errorf("service %q: command is empty", sp.ID)
	}
	switch sp.Restart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("service %q: restart policy %q: want always, on-failure or never", sp.ID, sp.Restart)
	}
	for _, e := range sp.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("service %q: env entry %q: want KEY=VALUE", sp.ID, e)
		}
	}
	for _, d := range sp.DependsOn {
		if d == sp.ID {
			return fmt.Errorf("service %q: depends on itself", sp.ID)
		}
	}
	if h := sp.Health; h != nil {
		if len(h.Exec) == 0 && h.TCP == "" {
			return fmt.Errorf("service %q: health check needs exec or tcp", sp.ID)
		}
		if h.Interval < 0 || h.Timeout < 0 {
			return fmt.Errorf("service %q: health check interval and timeout must not be negative", sp.ID)
		}
	}
	return nil
}

// startOrder returns the IDs so that every service comes after its
// dependencies (ties broken by ID), or an error naming a cycle. Dependencies
// outside specs are ignored.
func startOrder(specs map[string]Spec) ([]string, error) {
	const (
		unvisited = iota
		visiting
		visited
	)
	mark := map[string]int{}
	var order []string
	var visit func(id string, path []string) error
	visit = func(id string, path []string) error {
		switch mark[id] {
		case visited:
			return nil
		case visiting:
			i := slices.Index(path, id)
			return fmt.Errorf("dependency cycle: %s", strings.Join(append(path[i:], id), " -> "))
		}
		mark[id] = visiting
		deps := slices.Clone(specs[id].DependsOn)
		sort.Strings(deps)
		for _, d := range deps {
			if _, ok := specs[d]; !ok {
				continue
			}
			if err := visit(d, append(path, id)); err != nil {
				return err
			}
		}
		mark[id] = visited
		order = append(order, id)
		return nil
	}
	for _, id := range sortedIDs(specs) {
		if err := visit(id, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
