package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/kiln-os/kiln/machined/atomicfile"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
)

// Files of a cluster directory.
const (
	StateFile      = "cluster.json"
	PIDFile        = "qemu.pid"
	SerialLogFile  = "serial.log"
	OverlayFile    = "disk.qcow2"
	VarsFile       = "efivars.fd"
	SecretsFile    = "secrets.yaml"
	ConfigFile     = "controlplane.yaml"
	QEMUStderrFile = "qemu.stderr"
)

// Cluster is what Create made and Destroy removes, kept in <dir>/cluster.json.
type Cluster struct {
	Name        string `json:"name"`
	Provisioner string `json:"provisioner"`
	Arch        string `json:"arch"`
	// Boot is "uefi" or "direct".
	Boot string `json:"boot"`
	// Endpoint is 127.0.0.1:PORT, forwarded to the node's port 50000.
	Endpoint string `json:"endpoint"`
	HostPort int    `json:"hostPort"`
	// PID is QEMU's process ID (also in qemu.pid).
	PID   int    `json:"pid"`
	Image string `json:"image"`
	// Hostname is the node's host name set by the generated config.
	Hostname string `json:"hostname"`
	// KctlConfig and Context name the client config file and the context Create
	// wrote, which Destroy removes again.
	KctlConfig string    `json:"kctlconfig,omitempty"`
	Context    string    `json:"context,omitempty"`
	Created    time.Time `json:"created"`

	// Dir is the cluster directory (not stored: it is where the file was found).
	Dir string `json:"-"`
}

// SerialLog is the path of the node's console log.
func (c *Cluster) SerialLog() string { return filepath.Join(c.Dir, SerialLogFile) }

// ConfigPath is the path of the machine config Create applied.
func (c *Cluster) ConfigPath() string { return filepath.Join(c.Dir, ConfigFile) }

// ErrNotFound is returned by Load for a cluster that does not exist.
var ErrNotFound = errors.New("no such cluster")

// DefaultStateDir is ~/.kctl/clusters, beside kctl's default client config.
func DefaultStateDir() (string, error) {
	p, err := clientconfig.DefaultPath()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(p), "clusters"), nil
}

var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// CheckName accepts cluster names that are valid host-name labels of at most 40
// characters (the node's host name is derived from it).
func CheckName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("cluster name %q: want lowercase letters, digits and '-', at most 40, starting and ending with a letter or digit", name)
	}
	return nil
}

// Load reads the cluster called name from stateDir ("" means DefaultStateDir).
func Load(stateDir, name string) (*Cluster, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	dir, err := clusterDir(stateDir, name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr == nil {
			// Create failed before it wrote its state: the directory is still ours.
			return &Cluster{Name: name, Dir: dir}, nil
		}
		return nil, fmt.Errorf("%w %q in %s", ErrNotFound, name, filepath.Dir(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	var c Cluster
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("cluster %s: %s: %w", name, filepath.Join(dir, StateFile), err)
	}
	c.Dir = dir
	return &c, nil
}

func clusterDir(stateDir, name string) (string, error) {
	if stateDir == "" {
		d, err := DefaultStateDir()
		if err != nil {
			return "", err
		}
		stateDir = d
	}
	abs, err := filepath.Abs(filepath.Join(stateDir, name))
	if err != nil {
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	return abs, nil
}

func (c *Cluster) save() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode cluster state: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(c.Dir, StateFile), append(data, '\n'), 0o600)
}
