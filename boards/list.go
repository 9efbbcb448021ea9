package boards

import (
	"fmt"
	"sort"
	"strings"
)

// All returns every board Kiln knows, in a fixed order. This is the one registration list.
func All() []Board {
	return []Board{
		GenericAMD64(),
		GenericARM64(),
	}
}

// Lookup returns the board with the given name.
func Lookup(name string) (Board, error) {
	var names []string
	for _, b := range All() {
		if b.Name() == name {
			return b, nil
		}
		names = append(names, b.Name())
	}
	sort.Strings(names)
	return nil, fmt.Errorf("unknown board %q (known: %s)", name, strings.Join(names, ", "))
}
