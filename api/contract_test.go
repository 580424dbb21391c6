package api_test

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/deepersensor/deepersensor/api"
)

// errorsNeeded is the least an operation's documented errors must include, by path: a 4xx unless listed
// here. The probes and the contract itself have no client errors; readiness documents its 503.
var errorsNeeded = map[string]string{
	"/healthz":      "none",
	"/openapi.yaml": "none",
	"/readyz":       "any error",
}

// TestContract checks the rules of .spectral.yaml that concern operations, so that `go test` catches a
// contract that `make lint-api` would refuse: the document is valid (examples included), and every
// operation has an operationId, a summary, declared tags, documented errors, and examples for its JSON
// request body and JSON success responses.
func TestContract(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIYAML)
	if err != nil {
		t.Fatalf("load api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not valid: %v", err)
	}

	declared := map[string]bool{}
	for _, tag := range doc.Tags {
		declared[tag.Name] = true
	}
	seen := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.OperationID != "" {
				name = op.OperationID
			}
			t.Run(name, func(t *testing.T) {
				checkOperation(t, path, method, op, declared)
				if other, dup := seen[op.OperationID]; dup {
					t.Errorf("operationId %q is used by %s too", op.OperationID, other)
				}
				seen[op.OperationID] = method + " " + path
			})
		}
	}
}

// checkOperation applies the per-operation rules to one operation.
func checkOperation(t *testing.T, path, method string, op *openapi3.Operation, declared map[string]bool) {
	if op.OperationID == "" {
		t.Errorf("%s %s has no operationId", method, path)
	}
	if strings.TrimSpace(op.Summary) == "" {
		t.Error("no summary")
	}
	if len(op.Tags) == 0 {
		t.Error("no tags")
	}
	for _, tag := range op.Tags {
		if !declared[tag] {
			t.Errorf("tag %q is not declared in the top-level tags", tag)
		}
	}

	var clientErrors, errorStatuses []string
	for code, ref := range op.Responses.Map() {
		status, err := strconv.Atoi(code)
		if err != nil {
			t.Errorf("response %q: use explicit status codes", code)
			continue
		}
		if status >= 400 {
			errorStatuses = append(errorStatuses, code)
		}
		if status >= 400 && status < 500 {
			clientErrors = append(clientErrors, code)
		}
		if status >= 200 && status < 300 {
			checkExamples(t, "response "+code, ref.Value.Content)
		}
	}
	sort.Strings(errorStatuses)
	switch errorsNeeded[path] {
	case "none":
	case "any error":
		if len(errorStatuses) == 0 {
			t.Error("documents no error response")
		}
	default:
		if len(clientErrors) == 0 {
			t.Errorf("documents no 4xx response (errors: %v)", errorStatuses)
		}
	}

	if op.RequestBody != nil {
		checkExamples(t, "request body", op.RequestBody.Value.Content)
	}
}

// checkExamples fails t for each JSON media type of content that has no example.
func checkExamples(t *testing.T, what string, content openapi3.Content) {
	t.Helper()
	for mediaType, media := range content {
		if strings.Contains(mediaType, "json") && media.Example == nil && len(media.Examples) == 0 {
			t.Errorf("%s %s has no example", what, mediaType)
		}
	}
}
