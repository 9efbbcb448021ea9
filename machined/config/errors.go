package config

import (
	"fmt"
	"sort"
	"strings"
)

// FieldError is one problem in a config, at a YAML field path such as
// machine.network.interfaces[0].addresses[1].
type FieldError struct {
	Path string
	Msg  string
}

// Error returns "path: message", or only the message when Path is empty.
func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Error is every problem Parse found, in document order.
type Error struct {
	Problems []FieldError
}

// Error returns one line per problem, after a count line when there are
// several.
func (e *Error) Error() string {
	switch len(e.Problems) {
	case 0:
		return "invalid machine config"
	case 1:
		return e.Problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems in machine config:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Paths returns the path of every problem, in order.
func (e *Error) Paths() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Path
	}
	return out
}

// position orders problems: document, then line and column in it.
type position struct{ doc, line, col int }

func (p position) less(q position) bool {
	if p.doc != q.doc {
		return p.doc < q.doc
	}
	if p.line != q.line {
		return p.line < q.line
	}
	return p.col < q.col
}

type located struct {
	FieldError
	pos position
	seq int
}

// problems collects FieldErrors with the positions of the nodes they are
// about, so the final list follows the document and not the order of checks.
type problems struct {
	list []located
	// pos maps a field path to where its node was found; checks that run
	// on decoded values find their position here (or a parent's).
	pos map[string]position
	// end maps the path of a mapping to the position just after its
	// content: a missing field is reported there, after its present
	// siblings.
	end map[string]position
	// failed holds paths whose node could not be decoded; checks on the
	// decoded values skip them (and their children) to avoid a second,
	// confusing message about the zero value left behind.
	failed map[string]bool
	// doc is the document index used when nothing better is known.
	doc int
}

func newProblems() *problems {
	return &problems{pos: make(map[string]position), end: make(map[string]position), failed: make(map[string]bool)}
}

func (p *problems) at(pos position, path, format string, args ...any) {
	p.list = append(p.list, located{
		FieldError: FieldError{Path: path, Msg: fmt.Sprintf(format, args...)},
		pos:        pos,
		seq:        len(p.list),
	})
}

// add records a problem at path, positioned at path's node or its nearest
// recorded parent.
func (p *problems) add(path, format string, args ...any) {
	for q := path; q != ""; {
		if p.failed[q] {
			return
		}
		i := strings.LastIndexAny(q, ".[")
		if i <= 0 {
			break
		}
		q = q[:i]
	}
	p.at(p.lookup(path), path, format, args...)
}

func (p *problems) lookup(path string) position {
	if pos, ok := p.pos[path]; ok {
		return pos
	}
	for q := path; q != ""; {
		i := strings.LastIndexAny(q, ".[")
		if i < 0 {
			q = ""
		} else {
			q = q[:i]
		}
		if pos, ok := p.end[q]; ok {
			return pos
		}
		if pos, ok := p.pos[q]; ok {
			return pos
		}
	}
	return position{doc: p.doc, line: 1 << 30}
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool {
		a, b := p.list[i], p.list[j]
		if a.pos != b.pos {
			return a.pos.less(b.pos)
		}
		return a.seq < b.seq
	})
	e := &Error{Problems: make([]FieldError, 0, len(p.list))}
	seen := make(map[FieldError]bool)
	for _, l := range p.list {
		if seen[l.FieldError] {
			continue
		}
		seen[l.FieldError] = true
		e.Problems = append(e.Problems, l.FieldError)
	}
	return e
}

// join builds a field path.
func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func index(prefix string, i int) string {
	return fmt.Sprintf("%s[%d]", prefix, i)
}
