//go:build tools

// Package tools pins ESC's evaluator and the Pulumi CLI's projection code that main.go uses.
package tools

import (
	_ "github.com/pulumi/esc/eval"
	_ "github.com/pulumi/pulumi/pkg/v3/workspace"
)
