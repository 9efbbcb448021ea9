package cmd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// kctl runs kctl with args in a clean environment (no client config unless
// the test writes one at $KCTLCONFIG) and returns what it printed; stderr
// holds the error as main would print it.
func kctl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	// Hang protection only.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = Run(ctx, args, IO{In: strings.NewReader(""), Out: &out, Err: &errOut})
	if err != nil {
		errOut.WriteString(FormatError(err) + "\n")
	}
	return out.String(), errOut.String(), err
}

// isolate points HOME and KCTLCONFIG into a temporary directory and
// returns the KCTLCONFIG path (which does not exist yet).
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("USERPROFILE", dir)
	path := filepath.Join(dir, "kctlconfig")
	t.Setenv("KCTLCONFIG", path)
	return path
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeNode is a machine API server answering from fixed data.
type fakeNode struct {
	machine.UnimplementedMachineServiceServer
	hostname string
}

var since = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (f *fakeNode) Version(context.Context, *machine.VersionRequest) (*machine.VersionResponse, error) {
	return &machine.VersionResponse{
		Version:  &machine.VersionInfo{Tag: "v1.2.3", Sha: "abc123", GoVersion: "go1.26.8", Os: "linux", Arch: "amd64"},
		Hostname: f.hostname, Platform: "process", Maintenance: true,
	}, nil
}

func (f *fakeNode) ServiceList(context.Context, *machine.ServiceListRequest) (*machine.ServiceListResponse, error) {
	if f.hostname == "empty" {
		return &machine.ServiceListResponse{}, nil
	}
	return &machine.ServiceListResponse{Services: []*machine.ServiceInfo{
		{Id: "containerd", State: "Running", Restarts: 0, StateSince: timestamppb.New(since),
			Health: &machine.ServiceHealth{Checked: true, Healthy: true}},
		{Id: "kubelet", State: "Backoff", Restarts: 3, StateSince: timestamppb.New(since),
			Health: &machine.ServiceHealth{Checked: true, Healthy: false, LastMessage: "connection refused"}},
	}}, nil
}

func (f *fakeNode) Disks(context.Context, *machine.DisksRequest) (*machine.DisksResponse, error) {
	return &machine.DisksResponse{Disks: []*machine.Disk{{Name: "vda", SizeBytes: 10 << 30, Model: "QEMU", SystemDisk: true}}}, nil
}

func (f *fakeNode) Processes(context.Context, *machine.ProcessesRequest) (*machine.ProcessesResponse, error) {
	return &machine.ProcessesResponse{Processes: []*machine.Process{
		{Pid: 1, Name: "kiln-init:supe", State: "S", RssBytes: 3 << 20, CommandLine: "kiln-init:supervise",
			UserCpu: durationpb.New(1230 * time.Millisecond), SystemCpu: durationpb.New(4560 * time.Millisecond)},
	}}, nil
}

func (f *fakeNode) Logs(req *machine.LogsRequest, s grpc.ServerStreamingServer[machine.LogChunk]) error {
	if req.GetId() != "kubelet" {
		return status.Errorf(codes.NotFound, "no service %q", req.GetId())
	}
	for _, chunk := range []string{"line one\nline ", "two\n"} {
		if err := s.Send(&machine.LogChunk{Data: []byte(chunk)}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeNode) Reboot(context.Context, *machine.RebootRequest) (*machine.RebootResponse, error) {
	return nil, status.Error(codes.PermissionDenied,
		"os:reader may not call /kiln.machine.v1alpha1.MachineService/Reboot (allowed: os:admin, os:operator)")
}

func (f *fakeNode) ApplyConfiguration(_ context.Context, req *machine.ApplyConfigurationRequest) (*machine.ApplyConfigurationResponse, error) {
	if !req.GetDryRun() {
		return &machine.ApplyConfigurationResponse{Mode: req.GetMode(), Message: "Applied the configuration without a reboot."}, nil
	}
	return &machine.ApplyConfigurationResponse{
		Mode: machine.ApplyMode_APPLY_MODE_NO_REBOOT, Diff: "-a: 1\n+a: 2\n", Warnings: []string{"something odd"},
	}, nil
}

// startNode serves a fakeNode over TLS with a self-signed certificate on
// 127.0.0.1 and returns its address.
func startNode(t *testing.T, hostname string) string {
	t.Helper()
	return serveFake(t, hostname, &fakeNode{hostname: hostname})
}

// serveFake serves svc over TLS (a self-signed certificate for cn) on
// 127.0.0.1 until the test ends and returns the address.
func serveFake(t *testing.T, cn string, svc machine.MachineServiceServer) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	})))
	machine.RegisterMachineServiceServer(srv, svc)
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
