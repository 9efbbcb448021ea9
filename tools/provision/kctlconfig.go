package provision

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/kiln-os/kiln/machined/client/clientconfig"
)

// writeContext merges a context called name for endpoint into the client config at
// path (created when missing) and makes it current. A different context of that name
// is kept and the new one renamed name-1, name-2, … (clientconfig.Merge); the name
// used is returned.
func writeContext(path, name, endpoint string, ca, crt, key []byte) (string, error) {
	cfg, err := clientconfig.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		cfg, err = clientconfig.New(), nil
	}
	if err != nil {
		return "", err
	}
	other := clientconfig.New()
	other.Context = name
	other.Contexts[name] = clientconfig.NewContext([]string{endpoint}, nil, ca, crt, key)
	got := name
	if n, ok := cfg.Merge(other)[name]; ok {
		got = n
	}
	if err := cfg.Save(path); err != nil {
		return "", fmt.Errorf("write the kctl context: %w", err)
	}
	return got, nil
}

// removeContext deletes the context name from the client config at path if its
// endpoint is still endpoint (the user may have reused the name since), and clears the
// current context when it was that one. A missing file or context is not an error.
func removeContext(path, name, endpoint string) error {
	if path == "" || name == "" {
		return nil
	}
	cfg, err := clientconfig.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, ok := cfg.Contexts[name]
	if !ok || len(ctx.Endpoints) != 1 || ctx.Endpoints[0] != endpoint {
		return nil
	}
	delete(cfg.Contexts, name)
	if cfg.Context == name {
		cfg.Context = ""
	}
	if err := cfg.Save(path); err != nil {
		return fmt.Errorf("remove the kctl context %s: %w", name, err)
	}
	return nil
}
