// Package config is the Kiln machine configuration: its Go types, strict
// decoding, defaults, validation, canonical encoding, redaction, diffing and
// the live-apply/reboot decision.
//
// A machine config is multi-document YAML. Exactly one document is a
// MachineConfig (machine: and cluster: sections); zero or more documents are
// ServiceConfigs, extension services that machined supervises:
//
//	apiVersion: kiln.dev/v1alpha1
//	kind: MachineConfig
//	machine: {...}
//	cluster: {...}
//	---
//	apiVersion: kiln.dev/v1alpha1
//	kind: ServiceConfig
//	name: web
//	command: /usr/bin/web
//
// Parse decodes strictly and reports every problem at once as an *Error whose
// FieldErrors carry YAML field paths such as
// machine.network.interfaces[0].addresses[1]. Problems in a ServiceConfig
// document are prefixed with ServiceConfig(name), or ServiceConfig[i] (the
// index among ServiceConfig documents) while the name is unusable; problems
// in documents of unknown kind are prefixed with document[i] (the index of the
// document in the file).
//
// The package is pure Go: kctl builds it on every platform.
package config
