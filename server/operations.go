package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	contract "github.com/deepersensor/deepersensor/api"
)

// Operations with a treatment of their own, by their operationId in the contract.
var (
	// ipLimitedOperations are limited per client address before anything else runs: those that need no
	// account have nothing else to be limited by, and deleteMe checks a password as login does.
	ipLimitedOperations = map[string]bool{"signup": true, "login": true, "refresh": true, "logout": true, "deleteMe": true}
	// modelOperations hold a model call: they have a stricter per-user policy, a long write deadline, and
	// only a share of the instance's in-flight slots.
	modelOperations = map[string]bool{
		"chat": true, "streamChat": true,
		"openaiCreateChatCompletion": true, "openaiCreateEmbedding": true,
		"ollamaChat": true, "ollamaGenerate": true, "ollamaEmbed": true,
	}
	// probeOperations answer health probes: they skip the in-flight limit, so that an overloaded instance
	// still says whether it is alive.
	probeOperations = map[string]bool{"getHealth": true, "getReadiness": true}
)

// operationKey is the request context key of the operationId.
const operationKey contextKey = iota + 200

// operationIndex maps each route of the contract, as Echo names it ("GET /v1/models/:name"), to its
// operationId as the contract writes it.
func operationIndex() (map[string]string, error) {
	spec, err := openapi3.NewLoader().LoadFromData(contract.OpenAPIYAML)
	if err != nil {
		return nil, fmt.Errorf("load contract: %w", err)
	}
	index := make(map[string]string)
	for path, item := range spec.Paths.Map() {
		segments := strings.Split(path, "/")
		for i, seg := range segments {
			if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
				segments[i] = ":" + seg[1:len(seg)-1]
			}
		}
		route := strings.Join(segments, "/")
		for method, op := range item.Operations() {
			index[method+" "+route] = op.OperationID
		}
	}
	return index, nil
}

// checkOperations fails when a set above names an operation the contract does not have, so that renaming
// an operation in the contract cannot silently drop its limits.
func checkOperations(index map[string]string) error {
	known := make(map[string]bool, len(index))
	for _, op := range index {
		known[op] = true
	}
	for _, set := range []map[string]bool{ipLimitedOperations, modelOperations, probeOperations} {
		for op := range set {
			if !known[op] {
				return fmt.Errorf("operation %q is not in the contract", op)
			}
		}
	}
	return nil
}

// operationMiddleware puts the operationId of the matched route in the request context, for the middleware
// and the handlers after it.
func operationMiddleware(index map[string]string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			op := index[req.Method+" "+c.Path()]
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), operationKey, op)))
			return next(c)
		}
	}
}

// operationID returns the operationId of the request's route, or "" for a route outside the contract.
func operationID(c echo.Context) string {
	return operationFrom(c.Request().Context())
}

// operationFrom returns the operationId that operationMiddleware put in ctx, or "".
func operationFrom(ctx context.Context) string {
	op, _ := ctx.Value(operationKey).(string)
	return op
}
