package router_test

import (
	"testing"

	"github.com/deepersensor/deepersensor/provider/router"
)

// TestUpstream checks which upstream the router names for a model, as usage records name it.
func TestUpstream(t *testing.T) {
	several, err := router.New(router.Config{Upstreams: []router.Upstream{{Name: "local"}, {Name: "gpu"}}})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := router.New(router.Config{Upstreams: []router.Upstream{{Name: "ollama"}}, Bare: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		r           *router.Router
		model, want string
	}{
		{several, "gpu/llama-3.2-3b", "gpu"},
		{several, "local/tiny:latest", "local"},
		{several, "tiny", "local"},            // a bare name is the first upstream's
		{several, "hf.co/org/model", "local"}, // and so is a namespace that names no upstream
		{bare, "gpu/llama-3.2-3b", "ollama"},  // a bare router has its one upstream
		{bare, "ollama/namespaced:latest", "ollama"},
	}
	for _, tt := range tests {
		if got := tt.r.Upstream(tt.model); got != tt.want {
			t.Errorf("Upstream(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}
