//go:build tools

// Package tools makes the wrapper module depend on the command it builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
