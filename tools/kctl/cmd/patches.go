package cmd

import (
	"github.com/kiln-os/kiln/machined/config/patch"
)

// loadPatches reads --config-patch values (inline, or @FILE).
func loadPatches(args []string) ([]patch.Patch, error) {
	var out []patch.Patch
	for _, a := range args {
		p, err := patch.Load(a)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
