// Package config owns icebox's configuration: the types with their documented
// defaults, loading them (defaults, then a YAML file, then ICEBOX_* environment
// variables and the seed's aliases), and Validate, which reports every problem
// with the path of the field at fault ("turn.relay.min_port: …").
//
// The package parses and checks; it does not act. It opens no sockets and
// creates no files: a secret that is neither inline nor in a file is left
// empty for the caller to generate (see Secret.Value).
package config
