package cmd

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/config"
)

// NodeError is the failure of a call to one node.
type NodeError struct {
	Node string
	Err  error
}

func (e *NodeError) Error() string { return e.Node + ": " + describe(e.Err) }

func (e *NodeError) Unwrap() error { return e.Err }

// FormatError renders err as kctl prints it on standard error: one line per
// error, prefixed "kctl: ". Errors joined with errors.Join (one per failed
// node) each get their own line. Only a machine config's problem list spans
// several lines, one problem per line, exactly as config.Parse words it.
func FormatError(err error) string {
	if err == nil {
		return ""
	}
	var lines []string
	for _, e := range flatten(err) {
		lines = append(lines, "kctl: "+describe(e))
	}
	return strings.Join(lines, "\n")
}

// flatten splits errors.Join trees into their leaves, keeping wrapped
// errors whole.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// describe words one error. gRPC statuses become words instead of
// "rpc error: code = ... desc = ...".
func describe(err error) string {
	var ne *NodeError
	if errors.As(err, &ne) && err == error(ne) {
		return ne.Error()
	}
	// status.FromError would fold wrapping context into the message; find
	// the status itself.
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() != codes.OK {
		st := se.GRPCStatus()
		msg := describeStatus(st)
		// Keep whatever context was wrapped around the status.
		if full := err.Error(); !strings.HasPrefix(full, "rpc error:") {
			if i := strings.Index(full, ": rpc error:"); i > 0 {
				msg = full[:i] + ": " + msg
			}
		}
		if st.Code() == codes.InvalidArgument {
			return msg
		}
		return oneLine(msg)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		return err.Error()
	}
	return oneLine(err.Error())
}

func describeStatus(st *status.Status) string {
	msg := st.Message()
	switch c := st.Code(); c {
	case codes.PermissionDenied:
		// "/kiln.machine.v1alpha1.MachineService/Reboot" reads as "Reboot".
		return prefixed("permission denied", fullMethod.ReplaceAllString(msg, "$1"))
	case codes.Unauthenticated:
		return prefixed("not authenticated", msg)
	case codes.Unavailable:
		if reason, ok := transportReason(msg); ok {
			return "could not reach the node: " + reason
		}
		return prefixed("unavailable", msg)
	case codes.DeadlineExceeded:
		return "timed out waiting for the node"
	case codes.Canceled:
		return "interrupted"
	case codes.NotFound:
		return prefixed("not found", msg)
	case codes.Unimplemented:
		return prefixed("not supported by the node", msg)
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return prefixed("error on the node", msg)
	case codes.ResourceExhausted:
		return prefixed("resource exhausted", msg)
	default:
		// InvalidArgument, FailedPrecondition, AlreadyExists, Aborted,
		// OutOfRange: the node's message says it all.
		if msg == "" {
			return strings.ToLower(splitCamel(c.String()))
		}
		return msg
	}
}

// prefixed returns "words: msg" without repeating words the message already
// starts with.
func prefixed(words, msg string) string {
	if msg == "" {
		return words
	}
	if strings.HasPrefix(strings.ToLower(msg), words) {
		return msg
	}
	return words + ": " + msg
}

var (
	fullMethod = regexp.MustCompile(`/[A-Za-z0-9_.]+\.[A-Za-z0-9_]+/([A-Za-z0-9_]+)`)
	quotedDesc = regexp.MustCompile(`^connection error: desc = "(.*)"$`)
	dialPrefix = regexp.MustCompile(`(dial|read|write) tcp(?: \S+)?: (?:connect: |read: |write: )?`)
)

// transportReason extracts why a connection failed from the message gRPC
// gives an Unavailable status made by the transport, and reports whether the
// message was such a one (rather than the node's own "unavailable").
func transportReason(msg string) (string, bool) {
	m := msg
	if sub := quotedDesc.FindStringSubmatch(m); sub != nil {
		m = strings.ReplaceAll(sub[1], `\"`, `"`)
	}
	transport := m != msg ||
		strings.HasPrefix(m, "transport:") ||
		strings.HasPrefix(m, "name resolver error") ||
		strings.HasPrefix(m, "last connection error") ||
		strings.Contains(m, "dial tcp") ||
		strings.Contains(m, "error reading server preface") ||
		strings.Contains(m, "write tcp") || strings.Contains(m, "read tcp") ||
		strings.Contains(m, "connection closed") || strings.Contains(m, "tls:")
	if !transport {
		return "", false
	}
	m = strings.TrimPrefix(m, "last connection error: ")
	m = strings.TrimPrefix(m, "connection error: desc = ")
	m = strings.Trim(m, `"`)
	m = strings.TrimPrefix(m, "transport: ")
	m = strings.TrimPrefix(m, "Error while dialing: ")
	m = strings.TrimPrefix(m, "error while dialing: ")
	if strings.HasPrefix(m, "authentication handshake failed: ") {
		m = "TLS handshake failed: " + strings.TrimPrefix(m, "authentication handshake failed: ")
		m = strings.Replace(m, "tls: failed to verify certificate: ", "", 1)
	}
	m = dialPrefix.ReplaceAllString(m, "")
	m = strings.TrimPrefix(m, "error reading server preface: ")
	switch {
	case strings.Contains(m, "certificate signed by unknown authority"):
		m += " (a node in maintenance mode has a self-signed certificate: use --insecure)"
	case strings.Contains(m, "certificate is valid for"):
		m += " (dial an address the node's certificate names, or add it to machine.certSANs)"
	case strings.Contains(m, "certificate required"), strings.Contains(m, "bad certificate"):
		m += " (the node requires a client certificate: it has a configuration, so use a kctlconfig context instead of --insecure)"
	case strings.Contains(m, "broken pipe"), strings.Contains(m, "connection reset by peer"):
		m += " (the node closed the connection: if it has a configuration, it wants a client certificate from its CA)"
	}
	return m, true
}

// oneLine joins the lines of a message with "; ".
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "\n") {
		return s
	}
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// splitCamel turns "FailedPrecondition" into "Failed Precondition".
func splitCamel(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}
