// Package deepersensor is the root of the DeeperSensor API module. It holds no code: only the go:generate
// lines that regenerate gen/ from the contract (api/openapi.yaml) and the SQL (schema/, queries/).
// The generators are pinned as tool directives in go.mod.
package deepersensor

//go:generate go tool oapi-codegen -config oapi-codegen.yaml api/openapi.yaml
//go:generate go tool oapi-codegen -config oapi-codegen.client.yaml api/openapi.yaml
//go:generate env CGO_ENABLED=0 go tool sqlc generate
