// Package store keeps the machine config on disk so that it survives a crash
// at any moment: every write goes to a temporary file that is synced and then
// renamed into place, and the previous good config is kept as a fallback.
//
// Files under the store directory:
//
//	config        the current config
//	config.prev   the config before it (fallback when config is torn/corrupt)
//	staged        a config to apply at the next boot
//	*.tmp         writes in progress; removed by Open
//
// Each file is a header line followed by the config bytes:
//
//	kiln-config v1 sha256=<64 hex digits> len=<decimal length>\n<bytes>
//
// Load verifies length and checksum, so a torn or corrupted file is never
// returned as a config.
package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kiln-os/kiln/machined/atomicfile"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ErrNoConfig is returned by Load when no valid config is stored.
var ErrNoConfig = errors.New("no machine config stored")

const (
	currentName = "config"
	prevName    = "config.prev"
	stagedName  = "staged"
	tmpSuffix   = ".tmp"
	magic       = "kiln-config v1"
	// maxHeader bounds the header line so a garbage file is rejected quickly.
	maxHeader = 128
)

// Store is the machine config store in one directory. It is safe for
// concurrent use by goroutines of one process; it is not meant to be shared
// by two processes.
type Store struct {
	dir    string
	logger *slog.Logger
	mu     sync.Mutex
}

// Open opens the store in dir, creating dir if needed and removing
// temporary files left by an interrupted write.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open config store %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open config store %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("open config store: remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return &Store{dir: dir, logger: logger.With("component", "store")}, nil
}

// Load returns the current config. When the current file is missing, torn
// or corrupt it falls back to the previous good config and logs why. It
// returns an error wrapping ErrNoConfig when neither is valid.
func (s *Store) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load(true)
}

func (s *Store) load(logFallback bool) ([]byte, error) {
	data, curErr := s.readFile(currentName)
	if curErr == nil {
		return data, nil
	}
	prev, prevErr := s.readFile(prevName)
	if prevErr == nil {
		if logFallback {
			s.logger.Warn("current machine config unusable, using previous", "error", curErr)
		}
		return prev, nil
	}
	if errors.Is(curErr, fs.ErrNotExist) && errors.Is(prevErr, fs.ErrNotExist) {
		return nil, ErrNoConfig
	}
	return nil, fmt.Errorf("%w: current: %v; previous: %v", ErrNoConfig, curErr, prevErr)
}

// Checksum returns the hex SHA-256 of the config Load returns, or "" when
// there is none.
func (s *Store) Checksum() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.load(false)
	if err != nil {
		return ""
	}
	return sum(data)
}

// Save stores data as the current config and keeps the one it replaces as
// the fallback. After Save returns, Load returns data even after a crash or
// power loss; a crash during Save leaves either the old or the new config.
func (s *Store) Save(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.save(data)
}

// save is Save with s.mu held.
func (s *Store) save(data []byte) error {
	tmp, err := s.writeTemp(currentName, data)
	if err != nil {
		return fmt.Errorf("save machine config: %w", err)
	}
	cur := filepath.Join(s.dir, currentName)
	// Only a verified current config becomes the fallback, so a corrupt
	// current file never replaces a good previous one. Between the two
	// renames "config" is missing and Load falls back to "config.prev",
	// which is then the old config.
	if old, err := s.readFile(currentName); err == nil {
		if bytes.Equal(old, data) {
			os.Remove(tmp)
			return nil
		}
		if err := atomicfile.Rename(cur, filepath.Join(s.dir, prevName)); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("save machine config: keep previous: %w", err)
		}
	}
	if err := atomicfile.Rename(tmp, cur); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save machine config: %w", err)
	}
	s.logger.Info("machine config saved", "sha256", sum(data), "bytes", len(data))
	return nil
}

// SaveStaged stores data as the staged config, replacing any staged one.
func (s *Store) SaveStaged(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tmp, err := s.writeTemp(stagedName, data)
	if err != nil {
		return fmt.Errorf("save staged machine config: %w", err)
	}
	if err := atomicfile.Rename(tmp, filepath.Join(s.dir, stagedName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save staged machine config: %w", err)
	}
	return nil
}

// Staged returns the staged config without removing it, or false when
// nothing is staged. A staged file that fails verification is removed and
// reported as an error, so it cannot block every later boot.
func (s *Store) Staged() ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.readFile(stagedName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		if rerr := s.removeStaged(); rerr != nil {
			return nil, false, fmt.Errorf("staged machine config: %w", rerr)
		}
		return nil, false, fmt.Errorf("staged machine config: discarded: %w", err)
	}
	return data, true, nil
}

// PromoteStaged makes the staged config the current one (as Save does) and
// then removes the staged file, so a crash at any point leaves it either
// staged or current. It does nothing when nothing is staged.
func (s *Store) PromoteStaged() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.readFile(stagedName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("promote staged machine config: %w", err)
	}
	if err := s.save(data); err != nil {
		return fmt.Errorf("promote staged machine config: %w", err)
	}
	if err := s.removeStaged(); err != nil {
		return fmt.Errorf("promote staged machine config: %w", err)
	}
	return nil
}

// DiscardStaged removes the staged config, if any.
func (s *Store) DiscardStaged() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.removeStaged(); err != nil {
		return fmt.Errorf("discard staged machine config: %w", err)
	}
	return nil
}

// removeStaged removes the staged file durably; s.mu is held.
func (s *Store) removeStaged() error {
	if err := os.Remove(filepath.Join(s.dir, stagedName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// HasStaged reports whether a staged config file exists.
func (s *Store) HasStaged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := os.Stat(filepath.Join(s.dir, stagedName))
	return err == nil
}

// writeTemp writes header+data to name.tmp, syncs and closes it, and
// returns its path.
func (s *Store) writeTemp(name string, data []byte) (string, error) {
	tmp := filepath.Join(s.dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, maxHeader+len(data))
	buf = append(buf, header(data)...)
	buf = append(buf, data...)
	if _, err := f.Write(buf); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("close %s: %w", tmp, err)
	}
	return tmp, nil
}

// readFile reads and verifies one stored file.
func (s *Store) readFile(name string) ([]byte, error) {
	path := filepath.Join(s.dir, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

func header(data []byte) string {
	return fmt.Sprintf("%s sha256=%s len=%d\n", magic, sum(data), len(data))
}

func decode(raw []byte) ([]byte, error) {
	nl := bytes.IndexByte(raw[:min(len(raw), maxHeader)], '\n')
	if nl < 0 {
		return nil, errors.New("no header line (torn or not a config file)")
	}
	fields := strings.Fields(string(raw[:nl]))
	if len(fields) != 4 || fields[0]+" "+fields[1] != magic {
		return nil, fmt.Errorf("bad header %q", raw[:nl])
	}
	wantSum, ok := strings.CutPrefix(fields[2], "sha256=")
	if !ok {
		return nil, fmt.Errorf("bad header %q: no sha256", raw[:nl])
	}
	lenStr, ok := strings.CutPrefix(fields[3], "len=")
	if !ok {
		return nil, fmt.Errorf("bad header %q: no len", raw[:nl])
	}
	n, err := strconv.Atoi(lenStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad header %q: bad len", raw[:nl])
	}
	data := raw[nl+1:]
	if len(data) != n {
		return nil, fmt.Errorf("length %d, header says %d (torn write)", len(data), n)
	}
	if got := sum(data); got != wantSum {
		return nil, fmt.Errorf("checksum %s, header says %s (corrupt)", got, wantSum)
	}
	return data, nil
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}
