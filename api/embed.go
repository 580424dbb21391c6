// Package api holds the contract of the service, api/openapi.yaml: the single source of truth from which
// gen/apiserver (server) and gen/client (SDK) are generated. The server serves it as it is.
package api

import _ "embed"

// OpenAPIYAML is api/openapi.yaml, embedded in the binary.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte
