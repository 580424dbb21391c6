package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/deepersensor/deepersensor/core"
)

func TestErrorCode(t *testing.T) {
	notFound := core.Errorf(core.NotFound, "conversation not found")
	tests := []struct {
		name string
		err  error
		want core.Code
	}{
		{"nil", nil, ""},
		{"plain error", errors.New("boom"), core.Internal},
		{"context error", context.Canceled, core.Internal},
		{"core error", notFound, core.NotFound},
		{"wrapped core error", fmt.Errorf("get conversation: %w", notFound), core.NotFound},
		{"outermost wins", core.Wrap(core.NotStored, core.Errorf(core.Unavailable, "down"), "not stored"), core.NotStored},
		{"invalid field", core.InvalidField("title", "must not be blank"), core.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := core.ErrorCode(tt.err); got != tt.want {
				t.Errorf("ErrorCode = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorMessageAndCause(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:11434: connection refused")
	err := core.Wrap(core.UpstreamUnavailable, cause, "the model server is unavailable")
	if got, want := err.Error(), "the model server is unavailable: "+cause.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, cause) {
		t.Error("the cause is not in the chain")
	}
	if got, want := core.InvalidField("title", "must not be blank").Error(), "title: must not be blank"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
