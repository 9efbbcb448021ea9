package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readTar returns the regular files of a tar archive.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			out[h.Name], _ = io.ReadAll(tr)
		}
	}
}

func TestWriteArchive(t *testing.T) {
	dir := t.TempDir()
	bin := []byte("\x7fELF not really")
	var digests []string
	var archives [][]byte
	for _, name := range []string{"a.tar", "b.tar"} {
		img, err := Image(PauseSpec("arm64", bin))
		if err != nil {
			t.Fatal(err)
		}
		d, err := WriteArchive(filepath.Join(dir, name), PauseImage, img)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
		data, _ := os.ReadFile(filepath.Join(dir, name))
		archives = append(archives, data)
	}
	if digests[0] != digests[1] || !bytes.Equal(archives[0], archives[1]) {
		t.Errorf("two builds from the same binary differ: %v", digests)
	}

	files := readTar(t, filepath.Join(dir, "a.tar"))
	if _, ok := files["oci-layout"]; !ok {
		t.Fatalf("archive has no oci-layout; files: %v", keys(files))
	}
	var index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(index.Manifests))
	}
	m := index.Manifests[0]
	want := map[string]string{AnnotationImageName: PauseImage, AnnotationRefName: PauseImage}
	if diff := cmp.Diff(want, m.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if m.Digest != digests[0] || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index entry %s %s, want %s OCI manifest", m.Digest, m.MediaType, digests[0])
	}

	// The config says what a runtime needs: arch, entrypoint, user.
	var manifest struct {
		Config struct{ Digest string }      `json:"config"`
		Layers []struct{ MediaType string } `json:"layers"`
	}
	if err := json.Unmarshal(files["blobs/sha256/"+m.Digest[len("sha256:"):]], &manifest); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Architecture, OS string
		Config           struct {
			Entrypoint []string
			User       string
		}
	}
	if err := json.Unmarshal(files["blobs/sha256/"+manifest.Config.Digest[len("sha256:"):]], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "arm64" || cfg.OS != "linux" || !cmp.Equal(cfg.Config.Entrypoint, []string{"/pause"}) || cfg.Config.User != "65535:65535" {
		t.Errorf("config = %+v, want linux/arm64, entrypoint /pause, user 65535", cfg)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Errorf("layers = %+v, want one uncompressed OCI layer", manifest.Layers)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
