package agent

import "github.com/kiln-os/kiln/networking/serviceproxy"

// Datapath is what the agent programs: *serviceproxy.Proxy on a node, a fake in
// tests.
type Datapath interface {
	// Sync makes the programmed services exactly desired. Services that are
	// invalid or do not fit are reported in the error and keep their last good
	// state; the others are programmed.
	Sync(desired []serviceproxy.Service) error
	// Update programs upserts and removes deletes, with the same error rule.
	Update(upserts []serviceproxy.Service, deletes []serviceproxy.ServiceKey) error
	// Services returns what is programmed: the agent adopts it on start and
	// reads it back after an error to learn which services did not take.
	Services() []serviceproxy.Service
	// Stats returns fill levels and map sizes.
	Stats() serviceproxy.Stats
}

// HealthSyncer serves the health-check node ports of the Services it is given:
// *serviceproxy.HealthServer.
type HealthSyncer interface {
	Sync(svcs []serviceproxy.Service) error
}
