package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/upstream"
)

// statusError reads the error object of an answer that failed with a status other than 200. A refused key
// (401, 403) is a failure of the gateway's configuration, not of the client's request, so it is an
// UpstreamUnavailable error, whose cause leaves out the server's message: it may quote the key. An unknown
// model (404 to a model call) is ModelNotFound, a refused request (400, 422) ModelRefused with the server's
// message, and the rest (429, 5xx, an answer that is no error object) UpstreamUnavailable, with the
// server's Retry-After when it sends one.
func statusError(op string, resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return provider.UpstreamUnavailable(fmt.Errorf("%s: %s: the server refused the gateway's API key", op, resp.Status))
	}
	body := upstream.ReadErrorBody(resp)
	msg := errorMessage(body)
	switch {
	case msg == "":
		// Not the model server speaking (a wrong base URL, a proxy).
		return provider.UpstreamUnavailable(
			fmt.Errorf("%s: unexpected answer %s, body %q", op, resp.Status, upstream.Truncate(string(body), 200)))
	case resp.StatusCode == http.StatusNotFound && resp.Request.Method == http.MethodPost:
		return provider.ModelNotFound(fmt.Errorf("%s: %s: %s", op, resp.Status, msg))
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity:
		return provider.ModelRefused(msg, fmt.Errorf("%s: %s", op, resp.Status))
	}
	err := provider.UpstreamUnavailable(fmt.Errorf("%s: %s: %s", op, resp.Status, msg))
	if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
		err.RetryAfter = time.Duration(s) * time.Second
	}
	return err
}

// errorMessage returns the message of an error body, or "" when body is none: OpenAI's
// {"error": {"message": ...}}, the {"error": "..."} of some servers, or the bare {"message": ...} of older
// vLLM versions.
func errorMessage(body []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	var detail struct {
		Message string `json:"message"`
	}
	var text string
	switch {
	case json.Unmarshal(e.Error, &detail) == nil && detail.Message != "":
		return detail.Message
	case json.Unmarshal(e.Error, &text) == nil:
		return text
	}
	return e.Message
}
