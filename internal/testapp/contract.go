package testapp

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/gen/client"
)

var (
	specOnce   sync.Once
	spec       *openapi3.T
	specRouter routers.Router
	specErr    error
)

// Contract returns the parsed contract and a router over its operations.
func Contract(tb testing.TB) (*openapi3.T, routers.Router) {
	tb.Helper()
	if err := loadContract(); err != nil {
		tb.Fatalf("load contract: %v", err)
	}
	return spec, specRouter
}

// loadContract parses the contract once, for Contract and for the checks that must not end the goroutine
// they run on.
func loadContract() error {
	specOnce.Do(func() {
		openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.FileBodyDecoder)
		openapi3filter.RegisterBodyDecoder("application/yaml", openapi3filter.FileBodyDecoder)
		if spec, specErr = apiserver.GetSpec(); specErr != nil {
			return
		}
		spec.Servers = nil
		specRouter, specErr = gorillamux.NewRouter(spec)
	})
	return specErr
}

// validatingTransport checks every response against the contract: its status must be documented for the
// operation, and its headers and body must match. A mismatch fails the test. Event streams and NDJSON streams
// are checked for status and content type only, so that they still arrive event by event.
type validatingTransport struct {
	tb   testing.TB
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (v validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	ValidateResponse(v.tb, req, resp)
	return resp, nil
}

// ValidateResponse checks resp to req against the contract and fails tb when they disagree. It leaves
// resp.Body readable. It reports with Errorf only, so it is safe on any goroutine, as the clients' calls
// from a test's workers need.
func ValidateResponse(tb testing.TB, req *http.Request, resp *http.Response) {
	tb.Helper()
	if err := loadContract(); err != nil {
		tb.Errorf("contract: load: %v", err)
		return
	}
	route, params, err := specRouter.FindRoute(req)
	if err != nil {
		tb.Errorf("contract: %s %s is not an operation of the contract: %v", req.Method, req.URL.Path, err)
		return
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: resp.StatusCode,
		Header: resp.Header,
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true, // an undocumented status is an error
		},
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/event-stream") || strings.HasPrefix(ct, "application/x-ndjson") {
		input.Body = io.NopCloser(strings.NewReader(""))
		input.Options.ExcludeResponseBody = true
	} else {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			tb.Errorf("contract: read %s %s response: %v", req.Method, req.URL.Path, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		input.SetBodyBytes(body)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		tb.Errorf("contract: %s %s -> %d does not match the contract: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
}

// HTTPClient returns a plain HTTP client whose responses are validated against the contract.
func (a *App) HTTPClient(tb testing.TB) *http.Client {
	return &http.Client{Transport: validatingTransport{tb: tb, next: http.DefaultTransport}}
}

// Client returns the generated SDK client for the service, validating every response; editors, such as a
// bearer token, apply to every request.
func (a *App) Client(tb testing.TB, editors ...client.RequestEditorFn) *client.ClientWithResponses {
	tb.Helper()
	opts := []client.ClientOption{client.WithHTTPClient(a.HTTPClient(tb))}
	for _, e := range editors {
		opts = append(opts, client.WithRequestEditorFn(e))
	}
	c, err := client.NewClientWithResponses(a.URL, opts...)
	if err != nil {
		tb.Fatalf("new client: %v", err)
	}
	return c
}

// Bearer is a request editor that sends an access token.
func Bearer(token string) client.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}
