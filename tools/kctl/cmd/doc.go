// Package cmd holds kctl's commands (cobra). Run executes a command line;
// FormatError turns the error it returns into the lines kctl prints on
// standard error, each prefixed "kctl: ".
//
// Targets: with --nodes, each node is dialled directly (there is no API
// proxy); without, the --endpoints are dialled; without either, the nodes,
// then the endpoints, of the current context. Tables always carry a NODE
// column; streamed text is prefixed "NODE: " when several nodes answer.
package cmd
