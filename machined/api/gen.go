// Package api holds the machine API's protobuf definitions. The generated Go
// code lives in the machine subpackage; regenerate it with `make generate`
// (buf and the protoc plugins are pinned as tools in go.mod, no system protoc).
package api

//go:generate go tool buf generate
