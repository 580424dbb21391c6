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

// upstreamCheckTimeout bounds how long a readiness probe waits for the model servers, which it reports
// without waiting on them long.
const upstreamCheckTimeout = time.Second

// upstreamHealth is a provider in front of several model servers (the router) that can say which answer.
type upstreamHealth interface {
	Health(ctx context.Context) map[string]error
}

// ReplicaChecker is a read replica that can say whether it serves reads: Check returns nil when it does, else
// why not.
type ReplicaChecker interface {
	Check() error
}

// GetHealth implements GET /healthz: the process is up.
func (s *Server) GetHealth(context.Context, apiserver.GetHealthRequestObject) (apiserver.GetHealthResponseObject, error) {
	return apiserver.GetHealth200JSONResponse{Status: apiserver.Ok}, nil
}

// GetReadiness implements GET /readyz: 200 when the database answers, else 503 naming it. Either way its
// checks report each model server, as "upstream:<name>": "ok" or "unavailable", and the read replica, if
// any, as "database_replica": "ok" or "degraded". A model server that does not answer leaves the instance
// ready: it still serves accounts, conversations and the other servers' models, and every instance sees the
// same model servers, so taking it out of rotation would help nobody. A degraded replica leaves it ready too:
// the primary serves its reads meanwhile.
func (s *Server) GetReadiness(ctx context.Context, _ apiserver.GetReadinessRequestObject) (apiserver.GetReadinessResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	upstreams := make(chan map[string]string, 1)
	go func() { upstreams <- s.upstreamChecks(ctx) }()
	dbErr := s.database.Ping(ctx)
	checks := <-upstreams
	s.replicaCheck(ctx, checks)
	if dbErr != nil {
		s.logger.WarnContext(ctx, "not ready", "component", "database", "error", dbErr)
		body := problemBody(core.Errorf(core.NotReady, "not ready: database"), requestIDFrom(ctx))
		checks["database"] = "unavailable"
		body.Checks = &checks
		return apiserver.GetReadiness503ApplicationProblemPlusJSONResponse(body), nil
	}
	checks["database"] = "ok"
	return apiserver.GetReadiness200JSONResponse{Status: apiserver.Ok, Checks: &checks}, nil
}

// replicaCheck adds the read replica's state, if there is one, to checks, logging why it is degraded.
func (s *Server) replicaCheck(ctx context.Context, checks map[string]string) {
	if s.replica == nil {
		return
	}
	checks["database_replica"] = "ok"
	if err := s.replica.Check(); err != nil {
		checks["database_replica"] = "degraded"
		s.logger.WarnContext(ctx, "read replica degraded", "component", "database_replica", "error", err)
	}
}

// upstreamChecks returns the readiness checks of the model servers, logging those that do not answer.
func (s *Server) upstreamChecks(ctx context.Context) map[string]string {
	checks := map[string]string{}
	h, ok := s.provider.(upstreamHealth)
	if !ok {
		return checks
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamCheckTimeout)
	defer cancel()
	for name, err := range h.Health(ctx) {
		checks["upstream:"+name] = "ok"
		if err != nil {
			checks["upstream:"+name] = "unavailable"
			s.logger.WarnContext(ctx, "model server unavailable", "component", "upstream:"+name, "error", err)
		}
	}
	return checks
}

// GetOpenAPI implements GET /openapi.yaml: the contract as written.
func (s *Server) GetOpenAPI(context.Context, apiserver.GetOpenAPIRequestObject) (apiserver.GetOpenAPIResponseObject, error) {
	return apiserver.GetOpenAPI200ApplicationyamlResponse{
		Body: bytes.NewReader(spec.OpenAPIYAML), ContentLength: int64(len(spec.OpenAPIYAML)),
	}, nil
}
