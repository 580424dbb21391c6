// Package schema holds the numbered goose migrations of the database. sqlc reads the same files, and the
// server applies them at start-up from FS.
package schema

import "embed"

// FS holds the migrations, embedded in the binary.
//
//go:embed *.sql
var FS embed.FS
