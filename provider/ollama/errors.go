package ollama

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/upstream"
)

// statusError reads Ollama's {"error": "..."} answer to a request that failed with a non-200 status.
func statusError(op string, resp *http.Response) error {
	body := upstream.ReadErrorBody(resp)
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		// Not Ollama speaking (a wrong BaseURL, a proxy).
		return provider.UpstreamUnavailable(
			fmt.Errorf("%s: unexpected answer %s, body %q", op, resp.Status, upstream.Truncate(string(body), 200)))
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
