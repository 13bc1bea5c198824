//go:build tools

// Package tools pins Mailpit, the local SMTP server with an HTTP API that tests read.
package tools

import _ "github.com/axllent/mailpit"
