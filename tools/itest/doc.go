// Package itest holds Kiln's integration tests: they build the real machined
// and kctl binaries, run machined in process mode on 127.0.0.1 and drive it
// the way a user would. Nothing here needs root.
package itest
