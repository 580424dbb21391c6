package provider_test

import (
	"errors"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
)

func TestErrorConstructors(t *testing.T) {
	cause := errors.New(`ollama chat "tiny": 500 Internal Server Error`)
	tests := []struct {
		name           string
		err            error
		wantCode       core.Code
		wantMsg        string
		wantRetryAfter time.Duration
	}{
		{"ModelNotFound", provider.ModelNotFound(cause), core.ModelNotFound, "model not found", 0},
		{"ModelRefused", provider.ModelRefused(`option "seed" must be of type integer`, cause), core.ModelRefused,
			`the model provider refused the request: option "seed" must be of type integer`, 0},
		{"ModelRefused without a reason", provider.ModelRefused("", cause), core.ModelRefused,
			"the model provider refused the request", 0},
		{"UpstreamTimeout", provider.UpstreamTimeout(cause), core.UpstreamTimeout,
			"the model provider did not answer in time", 0},
		{"UpstreamUnavailable", provider.UpstreamUnavailable(cause), core.UpstreamUnavailable,
			"the model provider is unavailable", 5 * time.Second},
		{"UpstreamFailed", provider.UpstreamFailed(cause), core.UpstreamFailed,
			"the model provider failed in the middle of the answer", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := core.ErrorCode(tt.err); got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
			e, _ := errors.AsType[*core.Error](tt.err)
			if e == nil {
				t.Fatalf("%v is not a *core.Error", tt.err)
			}
			if e.Message != tt.wantMsg || e.RetryAfter != tt.wantRetryAfter {
				t.Errorf("Message %q, RetryAfter %v; want %q, %v", e.Message, e.RetryAfter, tt.wantMsg, tt.wantRetryAfter)
			}
			if !errors.Is(tt.err, cause) || tt.err.Error() != tt.wantMsg+": "+cause.Error() {
				t.Errorf("error %q does not wrap its cause %q", tt.err, cause)
			}
		})
	}
}
