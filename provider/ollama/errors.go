package ollama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/deepersensor/deepersensor/provider"
)

// errTimedOut is the cancellation cause of our own deadlines, told apart from the caller's.
var errTimedOut = errors.New("ollama: timed out")

// ctxError returns nil while ctx is live. Once it is done, it returns ErrTimeout with timeoutMsg if one of
// our deadlines ended it, or else the caller's context error.
func ctxError(ctx context.Context, op, timeoutMsg string) error {
	if ctx.Err() == nil {
		return nil
	}
	if errors.Is(context.Cause(ctx), errTimedOut) {
		return &provider.Error{Kind: provider.ErrTimeout, Op: op, Msg: timeoutMsg}
	}
	return fmt.Errorf("%s: %w", op, ctx.Err())
}

// sendError classifies a request that got no response.
func sendError(ctx context.Context, op string, err error, timeoutMsg string) error {
	if err := ctxError(ctx, op, timeoutMsg); err != nil {
		return err
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return &provider.Error{Kind: provider.ErrTimeout, Op: op, Msg: "connect timed out", Err: err}
	}
	return &provider.Error{Kind: provider.ErrUnavailable, Op: op, Msg: "model server unreachable", Err: err}
}

// statusError reads Ollama's {"error": "..."} answer to a request that failed with a non-200 status.
func statusError(op string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	fromOllama := json.Unmarshal(body, &e) == nil && e.Error != ""
	if !fromOllama {
		// Not Ollama speaking (a wrong BaseURL, a proxy): keep the body for the logs only.
		return &provider.Error{
			Kind: provider.ErrUnavailable, Op: op, Msg: "unexpected answer " + resp.Status,
			Err: fmt.Errorf("body %q", truncate(string(body), 200)),
		}
	}
	kind := provider.ErrUnavailable
	switch {
	case resp.StatusCode == http.StatusNotFound:
		kind = provider.ErrModelNotFound
	case resp.StatusCode == http.StatusBadRequest:
		kind = provider.ErrBadRequest
	case resp.StatusCode == http.StatusInternalServerError && strings.HasPrefix(e.Error, `option "`):
		// Ollama answers 500 to an option of the wrong type: `option "num_predict" must be of type integer`.
		kind = provider.ErrBadRequest
	}
	return &provider.Error{Kind: kind, Op: op, Msg: e.Error, Err: errors.New(resp.Status)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
