package config

import (
	"fmt"
	"strings"
)

// diffContext is the number of unchanged lines shown around a change.
const diffContext = 3

// Diff returns a unified diff from old to new of their redacted canonical
// YAML, or "" when they are equal. old may be nil (no config yet).
func Diff(old, new *Config) string {
	a, b := redactedLines(old), redactedLines(new)
	return unifiedDiff("old", "new", a, b)
}

func redactedLines(c *Config) []string {
	if c == nil {
		return nil
	}
	data, err := c.Redacted().Bytes()
	if err != nil {
		// Every Config the types can hold encodes; keep the error visible
		// in the diff rather than dropping the change.
		return []string{"# cannot encode config: " + err.Error()}
	}
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

type edit struct {
	op   byte // ' ', '-', '+'
	line string
}

// lineEdits computes a shortest edit script by longest common subsequence.
// Configs are a few hundred lines, so the quadratic table is fine.
func lineEdits(a, b []string) []edit {
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []edit
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			out = append(out, edit{' ', a[i]})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] > lcs[i+1][j]):
			out = append(out, edit{'+', b[j]})
			j++
		default:
			out = append(out, edit{'-', a[i]})
			i++
		}
	}
	return out
}

func unifiedDiff(nameA, nameB string, a, b []string) string {
	edits := lineEdits(a, b)
	changed := false
	for _, e := range edits {
		if e.op != ' ' {
			changed = true
			break
		}
	}
	if !changed {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	// Walk the script, cutting it into hunks of changes with context.
	for start := 0; start < len(edits); {
		// Find the next change.
		c := start
		for c < len(edits) && edits[c].op == ' ' {
			c++
		}
		if c == len(edits) {
			break
		}
		lo := max(c-diffContext, start)
		// Extend the hunk while changes are close together.
		hi := c
		for {
			for hi < len(edits) && edits[hi].op != ' ' {
				hi++
			}
			k := hi
			for k < len(edits) && edits[k].op == ' ' && k-hi < 2*diffContext+1 {
				k++
			}
			if k < len(edits) && edits[k].op != ' ' && k-hi <= 2*diffContext {
				hi = k
				continue
			}
			hi = min(hi+diffContext, len(edits))
			break
		}
		// Line numbers of the hunk in a and b.
		aLine, bLine := 1, 1
		for _, e := range edits[:lo] {
			if e.op != '+' {
				aLine++
			}
			if e.op != '-' {
				bLine++
			}
		}
		var aLen, bLen int
		for _, e := range edits[lo:hi] {
			if e.op != '+' {
				aLen++
			}
			if e.op != '-' {
				bLen++
			}
		}
		fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(aLine, aLen), hunkRange(bLine, bLen))
		for _, e := range edits[lo:hi] {
			sb.WriteByte(e.op)
			sb.WriteString(e.line)
			sb.WriteByte('\n')
		}
		start = hi
	}
	return sb.String()
}

func hunkRange(line, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", line-1)
	}
	if n == 1 {
		return fmt.Sprintf("%d", line)
	}
	return fmt.Sprintf("%d,%d", line, n)
}
