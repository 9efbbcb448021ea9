// Package deb reads Debian binary packages in pure Go: the ar container, and the
// data.tar inside it compressed with xz, zstd, gzip or not at all.
package deb

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrStop ends a Walk early without an error.
var ErrStop = errors.New("stop walking")

const arMagic = "!<arch>\n"

// member finds the ar member whose name starts with prefix and returns its name and a
// reader limited to its content.
func member(r io.Reader, prefix string) (string, io.Reader, error) {
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != arMagic {
		return "", nil, fmt.Errorf("not a Debian package (no ar header)")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return "", nil, fmt.Errorf("no %s* member", prefix)
			}
			return "", nil, fmt.Errorf("read ar header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return "", nil, fmt.Errorf("corrupt ar header")
		}
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return "", nil, fmt.Errorf("ar member %q: bad size", name)
		}
		if strings.HasPrefix(name, prefix) {
			return name, io.LimitReader(r, size), nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return "", nil, fmt.Errorf("skip ar member %q: %w", name, err)
		}
	}
}

// decompress wraps r according to the member's file name suffix.
func decompress(name string, r io.Reader) (io.Reader, func(), error) {
	switch {
	case strings.HasSuffix(name, ".xz"):
		cfg := xz.ReaderConfig{SingleStream: false}
		zr, err := cfg.NewReader(bufio.NewReaderSize(r, 1<<20))
		return zr, func() {}, err
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case strings.HasSuffix(name, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case strings.HasSuffix(name, ".tar"):
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression of %s", name)
}

// Walk calls fn for every entry of the package's data archive, in archive order. Names
// are cleaned of a leading "./". fn may return ErrStop to end the walk.
func Walk(path string, fn func(h *tar.Header, r io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open package: %w", err)
	}
	defer f.Close()
	if err := walk(bufio.NewReaderSize(f, 1<<20), fn); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func walk(r io.Reader, fn func(h *tar.Header, r io.Reader) error) error {
	name, mr, err := member(r, "data.tar")
	if err != nil {
		return err
	}
	dr, closeFn, err := decompress(name, mr)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer closeFn()
	tr := tar.NewReader(dr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		h.Name = strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		if h.Name == "" {
			continue
		}
		if err := fn(h, tr); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}

// ReadFiles returns the content of every regular file whose name want accepts.
func ReadFiles(path string, want func(name string) bool) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := Walk(path, func(h *tar.Header, r io.Reader) error {
		if h.Typeflag != tar.TypeReg || !want(h.Name) {
			return nil
		}
		var buf bytes.Buffer
		buf.Grow(int(h.Size))
		if _, err := io.Copy(&buf, r); err != nil {
			return fmt.Errorf("read %s: %w", h.Name, err)
		}
		out[h.Name] = buf.Bytes()
		return nil
	})
	return out, err
}

// ReadFile returns one regular file of the package.
func ReadFile(path, name string) ([]byte, error) {
	files, err := ReadFiles(path, func(n string) bool { return n == name })
	if err != nil {
		return nil, err
	}
	b, ok := files[name]
	if !ok {
		return nil, fmt.Errorf("%s: no file %s", path, name)
	}
	return b, nil
}
