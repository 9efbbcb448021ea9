// Command mkoci writes the preloaded images of a Kiln node (pause and
// CoreDNS) as OCI archives plus an images.json manifest into a directory.
// controlplane/build.sh runs it after building the binaries.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kiln-os/kiln/controlplane/images"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		log.Fatalf("mkoci: %v", err)
	}
}

func run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("mkoci", flag.ContinueOnError)
	out := fs.String("out", "", "output directory")
	arch := fs.String("arch", "amd64", "GOARCH of the binaries")
	pause := fs.String("pause", "", "pause binary")
	coredns := fs.String("coredns", "", "coredns binary")
	corednsName := fs.String("coredns-name", images.CoreDNSImage, "CoreDNS image reference")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *pause == "" || *coredns == "" {
		return fmt.Errorf("-out, -pause and -coredns are required")
	}
	var m images.Manifest
	for _, im := range []struct {
		archive, bin string
		spec         func([]byte) images.Spec
	}{
		{"pause.tar", *pause, func(b []byte) images.Spec { return images.PauseSpec(*arch, b) }},
		{"coredns.tar", *coredns, func(b []byte) images.Spec { return images.CoreDNSSpec(*corednsName, *arch, b) }},
	} {
		bin, err := os.ReadFile(im.bin)
		if err != nil {
			return err
		}
		spec := im.spec(bin)
		img, err := images.Image(spec)
		if err != nil {
			return err
		}
		digest, err := images.WriteArchive(filepath.Join(*out, im.archive), spec.Name, img)
		if err != nil {
			return fmt.Errorf("%s: %w", im.archive, err)
		}
		m.Images = append(m.Images, images.ManifestEntry{Name: spec.Name, Archive: im.archive, Digest: digest.String()})
	}
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "images.json"), data, 0o644)
}
