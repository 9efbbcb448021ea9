//go:build linux

package agent

import "github.com/kiln-os/kiln/networking/serviceproxy"

var _ Datapath = (*serviceproxy.Proxy)(nil)
