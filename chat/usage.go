package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/usage"
)

// EmbedRequest asks for embeddings on behalf of a user.
type EmbedRequest struct {
	UserID    uuid.UUID
	APIKeyID  uuid.UUID // the API key that authenticated the request, or uuid.Nil, for the usage record
	RequestID string    // for the usage record
	Model     string
	Input     []string
}

// Embed checks the model, turns each input text into a vector with it and accounts for the call: its
// prompt tokens as the model server counts them, and no completion tokens.
func (s *Service) Embed(ctx context.Context, req EmbedRequest) (provider.EmbedResponse, error) {
	listedAs, err := s.checkModel(ctx, req.Model)
	if err != nil {
		return provider.EmbedResponse{}, err
	}
	c := s.startCall(caller{userID: req.UserID, apiKeyID: req.APIKeyID, requestID: req.RequestID}, listedAs)
	resp, err := s.provider.Embed(ctx, provider.EmbedRequest{Model: req.Model, Input: req.Input})
	if err != nil {
		c.end(failed(ctx), "", nil)
		return provider.EmbedResponse{}, fmt.Errorf("embed: %w", err)
	}
	c.end(usage.Complete, resp.Model, &provider.Usage{PromptTokens: resp.PromptTokens})
	return resp, nil
}

// caller is who makes a model call, for its usage record.
type caller struct {
	userID, apiKeyID uuid.UUID
	requestID        string
}

// call measures one model call for its usage record.
type call struct {
	svc        *Service
	who        caller
	listedAs   string // the model as the model server lists it
	start      time.Time
	firstToken time.Duration // until the first chunk with content was delivered
	chunks     int           // the chunks with content delivered
}

// startCall starts measuring a call of the model that the model server lists as listedAs.
func (s *Service) startCall(who caller, listedAs string) *call {
	return &call{svc: s, who: who, listedAs: listedAs, start: time.Now()}
}

// delivered counts a chunk of a stream handed to its consumer.
func (c *call) delivered(content string) {
	if content == "" {
		return
	}
	if c.chunks == 0 {
		c.firstToken = time.Since(c.start)
	}
	c.chunks++
}

// end gives the call's usage record to the recorder: its outcome, the model that answered ("" when none
// did) and the model server's counts. Without counts (a stream that ended early), the completion tokens are
// the chunks with content that were delivered: Ollama sends one token per chunk, and OpenAI-compatible
// servers about one.
func (c *call) end(outcome, answeredBy string, counts *provider.Usage) {
	if c.svc.recorder == nil {
		return
	}
	model := c.listedAs
	if answeredBy != "" && !provider.SameModel(answeredBy, c.listedAs) {
		model = answeredBy // a fallback answered
	}
	r := usage.Record{
		UserID: c.who.userID, APIKeyID: c.who.apiKeyID, Model: model, Upstream: c.svc.provider.Upstream(model),
		CompletionTokens: c.chunks, TimeToFirstToken: c.firstToken, Duration: time.Since(c.start), Outcome: outcome,
		RequestID: c.who.requestID, CreatedAt: time.Now(),
	}
	if counts != nil && (counts.PromptTokens > 0 || counts.CompletionTokens > 0) { // zero: the server sent none
		r.PromptTokens, r.CompletionTokens = counts.PromptTokens, counts.CompletionTokens
	}
	c.svc.recorder.Record(r)
}

// failed is the outcome of a call that ended without its answer: incomplete when its caller stopped it
// (ctx ended: the client left, or the server shut down), an error otherwise.
func failed(ctx context.Context) string {
	if ctx.Err() != nil {
		return usage.Incomplete
	}
	return usage.Error
}
