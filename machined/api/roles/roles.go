// Package roles is the machine API's authorization table: which role may call
// which gRPC method. It is the one place that decides; the server enforces it
// and tests walk it. Roles travel in the Organization field of a client
// certificate issued by the machine CA.
package roles

import (
	"slices"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// Role is a machine API role, as written in a client certificate's
// Organization.
type Role string

const (
	// Admin may do everything, including reading secrets.
	Admin Role = "os:admin"
	// Operator may read, and also reboot the node and start/stop services.
	Operator Role = "os:operator"
	// Reader may read state (secrets redacted).
	Reader Role = "os:reader"
)

// All lists every role, most powerful first.
var All = []Role{Admin, Operator, Reader}

// Parse returns the role named s and whether s names one.
func Parse(s string) (Role, bool) {
	r := Role(s)
	return r, slices.Contains(All, r)
}

// GRPC methods that are not part of MachineService.
const (
	HealthCheck = "/grpc.health.v1.Health/Check"
	HealthWatch = "/grpc.health.v1.Health/Watch"
	HealthList  = "/grpc.health.v1.Health/List"
)

var (
	readers   = []Role{Admin, Operator, Reader}
	operators = []Role{Admin, Operator}
	admins    = []Role{Admin}
)

// Methods maps every full gRPC method name the server exposes to the roles
// allowed to call it. A method missing here is refused to everyone.
var Methods = map[string][]Role{
	machine.MachineService_ApplyConfiguration_FullMethodName:   admins,
	machine.MachineService_ConfirmConfiguration_FullMethodName: admins,
	machine.MachineService_GetConfig_FullMethodName:            readers,
	machine.MachineService_Version_FullMethodName:              readers,
	machine.MachineService_Disks_FullMethodName:                readers,
	machine.MachineService_ServiceList_FullMethodName:          readers,
	machine.MachineService_ServiceStart_FullMethodName:         operators,
	machine.MachineService_ServiceStop_FullMethodName:          operators,
	machine.MachineService_ServiceRestart_FullMethodName:       operators,
	machine.MachineService_Logs_FullMethodName:                 readers,
	machine.MachineService_Dmesg_FullMethodName:                readers,
	machine.MachineService_Events_FullMethodName:               readers,
	machine.MachineService_Reboot_FullMethodName:               operators,
	machine.MachineService_Shutdown_FullMethodName:             operators,
	machine.MachineService_Mounts_FullMethodName:               readers,
	machine.MachineService_Netstat_FullMethodName:              readers,
	machine.MachineService_Processes_FullMethodName:            readers,
	machine.MachineService_Links_FullMethodName:                readers,
	machine.MachineService_Addresses_FullMethodName:            readers,
	machine.MachineService_Routes_FullMethodName:               readers,
	machine.MachineService_Resolvers_FullMethodName:            readers,
	machine.MachineService_Hostname_FullMethodName:             readers,
	machine.MachineService_TimeStatus_FullMethodName:           readers,
	machine.MachineService_Leases_FullMethodName:               readers,
	machine.MachineService_DebugAction_FullMethodName:          admins,

	HealthCheck: readers,
	HealthWatch: readers,
	HealthList:  readers,
}

// Maintenance lists the methods that answer without a client certificate
// while the node has no configuration (maintenance mode).
var Maintenance = []string{
	machine.MachineService_ApplyConfiguration_FullMethodName,
	machine.MachineService_Version_FullMethodName,
	machine.MachineService_Disks_FullMethodName,
	HealthCheck,
}

// Allowed reports whether any of the caller's roles may call method.
func Allowed(method string, have []Role) bool {
	for _, r := range Methods[method] {
		if slices.Contains(have, r) {
			return true
		}
	}
	return false
}

// AllowedInMaintenance reports whether method answers unauthenticated callers
// in maintenance mode.
func AllowedInMaintenance(method string) bool {
	return slices.Contains(Maintenance, method)
}
