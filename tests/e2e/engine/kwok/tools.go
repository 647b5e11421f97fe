//go:build tools

// Package tools makes the wrapper module depend on the command it builds.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
