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

// ctxError returns nil while ctx is live. Once it is done, it returns an UpstreamTimeout error saying
// timedOut (such as "no answer within 5m0s") if one of our deadlines ended it, or else the caller's context
// error.
func ctxError(ctx context.Context, op, timedOut string) error {
	if ctx.Err() == nil {
		return nil
	}
	if errors.Is(context.Cause(ctx), errTimedOut) {
		return provider.UpstreamTimeout(fmt.Errorf("%s: %s", op, timedOut))
	}
	return fmt.Errorf("%s: %w", op, ctx.Err())
}

// sendError classifies a request that got no response.
func sendError(ctx context.Context, op string, err error, timedOut string) error {
	if err := ctxError(ctx, op, timedOut); err != nil {
		return err
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return provider.UpstreamTimeout(fmt.Errorf("%s: connect timed out: %w", op, err))
	}
	return provider.UpstreamUnavailable(fmt.Errorf("%s: unreachable: %w", op, err))
}

// statusError reads Ollama's {"error": "..."} answer to a request that failed with a non-200 status.
func statusError(op string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		// Not Ollama speaking (a wrong BaseURL, a proxy).
		return provider.UpstreamUnavailable(
			fmt.Errorf("%s: unexpected answer %s, body %q", op, resp.Status, truncate(string(body), 200)))
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return provider.ModelNotFound(fmt.Errorf("%s: %s: %s", op, resp.Status, e.Error))
	case resp.StatusCode == http.StatusBadRequest,
		// Ollama answers 500 to an option of the wrong type: `option "num_predict" must be of type integer`.
		resp.StatusCode == http.StatusInternalServerError && strings.HasPrefix(e.Error, `option "`):
		return provider.ModelRefused(e.Error, fmt.Errorf("%s: %s", op, resp.Status))
	}
	return provider.UpstreamUnavailable(fmt.Errorf("%s: %s: %s", op, resp.Status, e.Error))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
