package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
)

// ollamaJSON is the media type of Ollama's JSON answers.
const ollamaJSON = "application/json; charset=utf-8"

// ollamaLine renders an answer of /ollama/api/chat or /ollama/api/generate, or one line of its stream, from
// the fields that every answer has and the text of the answer or of the line.
type ollamaLine func(common apiserver.OllamaAnswerBase, text string) any

// ollamaChatLine is an OllamaChatResponse.
func ollamaChatLine(common apiserver.OllamaAnswerBase, text string) any {
	return struct {
		apiserver.OllamaAnswerBase
		Message apiserver.OllamaAssistantMessage `json:"message"`
	}{common, apiserver.OllamaAssistantMessage{Role: apiserver.OllamaAssistantMessageRoleAssistant, Content: text}}
}

// ollamaGenerateLine is an OllamaGenerateResponse.
func ollamaGenerateLine(common apiserver.OllamaAnswerBase, text string) any {
	return struct {
		apiserver.OllamaAnswerBase
		Response string `json:"response"`
	}{common, text}
}

// ollamaAnswer is the 200 answer of /ollama/api/chat and /ollama/api/generate: one JSON object, or an NDJSON
// stream whose lines are flushed one by one. As Ollama does, it sends its status only once the model's
// first chunk came, so that a failure before it is answered with its own status and headers; a failure after
// it ends the stream with an {"error": "..."} line and no done line.
type ollamaAnswer struct {
	chunks  iter.Seq2[provider.Chunk, error]
	stream  bool
	model   string // as the request named it
	line    ollamaLine
	failure func(error) *core.Error // turns a failure into the core error the client is told
	// writeTimeout bounds the write of each line.
	writeTimeout time.Duration
	metrics      *metrics.Metrics
	label        string    // the metrics label of the model: its name as the model server lists it
	start        time.Time // when the request arrived, for the time to first token
}

// VisitOllamaChatResponse writes the answer of POST /ollama/api/chat.
func (a ollamaAnswer) VisitOllamaChatResponse(w http.ResponseWriter) error { return a.write(w) }

// VisitOllamaGenerateResponse writes the answer of POST /ollama/api/generate.
func (a ollamaAnswer) VisitOllamaGenerateResponse(w http.ResponseWriter) error { return a.write(w) }

func (a ollamaAnswer) write(w http.ResponseWriter) error {
	lines := newSSEWriter(w, a.writeTimeout)
	started := false
	fail := func(err error) {
		e := a.failure(err)
		if !started {
			_ = writeOllamaError(w, e)
			return
		}
		_ = lines.line(apiserver.OllamaError{Error: ollamaMessage(e)})
	}
	defer func() {
		// A panic in the model's stream ends this answer, not the process.
		if r := recover(); r != nil {
			fail(internalError(fmt.Errorf("model stream panicked: %v\n%s", r, debug.Stack())))
		}
	}()
	var text strings.Builder
	for chunk, err := range a.chunks {
		switch {
		case err != nil:
			fail(err)
			return nil
		case !a.stream:
			text.WriteString(chunk.Content)
			if chunk.Done {
				chunk.Content = text.String()
				return writeOllamaJSON(w, http.StatusOK, a.render(chunk))
			}
			continue
		case !started:
			started = true
			h := w.Header()
			h.Set(echo.HeaderContentType, "application/x-ndjson")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			a.metrics.OpenStreams.Inc()
			a.metrics.TimeToFirstToken.WithLabelValues(a.label).Observe(time.Since(a.start).Seconds())
			defer func() {
				a.metrics.OpenStreams.Dec()
				a.metrics.StreamDuration.WithLabelValues(a.label).Observe(time.Since(a.start).Seconds())
			}()
		}
		if err := lines.line(a.render(chunk)); err != nil {
			a.metrics.ClientCancellations.Inc()
			return nil
		}
		if chunk.Done {
			return nil
		}
	}
	// The model's stream ended without a final chunk or an error: only when the client left.
	return nil
}

// render turns a chunk into the route's answer or line. The model is the one that answered, on the final
// chunk, else the one asked for.
func (a ollamaAnswer) render(c provider.Chunk) any {
	u := c.Usage
	return a.line(apiserver.OllamaAnswerBase{
		Model: cmp.Or(c.Model, a.model), CreatedAt: time.Now().UTC(), Done: c.Done, DoneReason: c.DoneReason,
		TotalDuration: u.TotalDuration.Nanoseconds(), LoadDuration: u.LoadDuration.Nanoseconds(),
		PromptEvalCount: u.PromptTokens, PromptEvalDuration: u.PromptEvalDuration.Nanoseconds(),
		EvalCount: u.CompletionTokens, EvalDuration: u.EvalDuration.Nanoseconds(),
	}, c.Content)
}

// turnChunks runs turn when iterated, counting its tokens; the server's drain ends it with
// errShuttingDown. It gives back the caller's model call with release when the turn ends.
func (s *Server) turnChunks(ctx context.Context, turn *chat.Turn, release func()) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		defer release()
		err := s.untilDrained(ctx, func(ctx context.Context) error {
			for chunk, err := range turn.Stream(ctx) {
				if err != nil {
					return err
				}
				if chunk.Done {
					s.metrics.CountTokens(turn.ListedModel(), turn.Upstream(), chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens)
				}
				if !yield(chunk, nil) {
					return nil
				}
			}
			return nil
		})
		if err != nil {
			yield(provider.Chunk{}, err)
		}
	}
}

// line writes v as one line of an NDJSON stream and flushes it, pushing the write deadline forward as
// events do.
func (s *sseWriter) line(v any) error {
	s.buf.Reset()
	if err := s.enc.Encode(v); err != nil { // ends the line
		return err
	}
	return s.send()
}

// writeOllamaError answers with e in Ollama's shape, {"error": "..."}, with the status and headers its code
// has on every route.
func writeOllamaError(w http.ResponseWriter, e *core.Error) error {
	status := kindOf(e.Code).status
	if status == http.StatusUnauthorized {
		w.Header().Set(echo.HeaderWWWAuthenticate, "Bearer")
	}
	setRetryHeaders(w.Header(), e)
	return writeOllamaJSON(w, status, apiserver.OllamaError{Error: ollamaMessage(e)})
}

// ollamaMessage is what Ollama's clients are told of e: what a problem's detail says.
func ollamaMessage(e *core.Error) string { return problemBody(e, "").Detail }

// writeOllamaJSON answers with v as Ollama's JSON answers are written: one object without a newline after it.
func writeOllamaJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set(echo.HeaderContentType, ollamaJSON)
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}
