package server_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// collector is an OTLP/HTTP trace receiver that keeps the names of the spans of each trace it receives.
type collector struct {
	mu    sync.Mutex
	spans map[string][]string // trace id (hex) -> span names
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				id := hex.EncodeToString(sp.TraceId)
				c.spans[id] = append(c.spans[id], sp.Name)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write([]byte{})
}

func (c *collector) names(traceID string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans[traceID]...)
}

func TestTracing(t *testing.T) {
	col := &collector{spans: map[string][]string{}}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp, err := c.ChatWithResponse(context.Background(), client.ChatRequest{Model: "tiny", Messages: userMessage("hi")},
		func(_ context.Context, req *http.Request) error {
			req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
			return nil
		})
	if err != nil || resp.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	if !strings.Contains(a.Logs.String(), `"trace_id":"`+traceID+`"`) {
		t.Error("the access log line does not carry the trace id")
	}
	propagated := false
	for _, r := range a.Ollama.Requests() {
		if r.Path == "/api/chat" && strings.Contains(r.Header.Get("traceparent"), traceID) {
			propagated = true
		}
	}
	if !propagated {
		t.Error("the trace was not propagated to Ollama")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		names := col.names(traceID)
		// The request's span, the statement that stores the answer (one data-modifying WITH), and the client
		// span of the call to Ollama's /api/chat.
		if slices.Contains(names, "POST /v1/chat") && slices.Contains(names, "WITH") && slices.Contains(names, "HTTP POST") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of the trace = %q, want the request, database queries and the call to Ollama", col.names(traceID))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
