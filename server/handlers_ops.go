package server

import (
	"bytes"
	"context"
	"time"

	spec "github.com/deepersensor/deepersensor/api"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
)

// readinessTimeout bounds how long a readiness probe waits for a dependency.
const readinessTimeout = 2 * time.Second

// GetHealth implements GET /healthz: the process is up.
func (s *Server) GetHealth(context.Context, apiserver.GetHealthRequestObject) (apiserver.GetHealthResponseObject, error) {
	return apiserver.GetHealth200JSONResponse{Status: apiserver.Ok}, nil
}

// GetReadiness implements GET /readyz: 200 when the database answers, else 503 naming it.
func (s *Server) GetReadiness(ctx context.Context, _ apiserver.GetReadinessRequestObject) (apiserver.GetReadinessResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	if err := s.database.Ping(ctx); err != nil {
		s.logger.WarnContext(ctx, "not ready", "component", "database", "error", err)
		body := problemBody(core.Errorf(core.NotReady, "not ready: database"), requestIDFrom(ctx))
		body.Checks = &map[string]string{"database": "unavailable"}
		return apiserver.GetReadiness503ApplicationProblemPlusJSONResponse(body), nil
	}
	checks := map[string]string{"database": "ok"}
	return apiserver.GetReadiness200JSONResponse{Status: apiserver.Ok, Checks: &checks}, nil
}

// GetOpenAPI implements GET /openapi.yaml: the contract as written.
func (s *Server) GetOpenAPI(context.Context, apiserver.GetOpenAPIRequestObject) (apiserver.GetOpenAPIResponseObject, error) {
	return apiserver.GetOpenAPI200ApplicationyamlResponse{
		Body: bytes.NewReader(spec.OpenAPIYAML), ContentLength: int64(len(spec.OpenAPIYAML)),
	}, nil
}
