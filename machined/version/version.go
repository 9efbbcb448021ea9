// Package version holds the version of this Kiln build, stamped at link
// time:
//
//	go build -ldflags "-X github.com/kiln-os/kiln/machined/version.Tag=v0.1.0 \
//	  -X github.com/kiln-os/kiln/machined/version.SHA=$(git rev-parse HEAD)"
//
// It is pure Go and shared by machined and kctl.
package version

var (
	// Tag is the release tag, e.g. v0.1.0; "dev" for an unstamped build.
	Tag = "dev"
	// SHA is the git commit the build was made from; empty when unknown.
	SHA = ""
)
