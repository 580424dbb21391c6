package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/quota"
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

// Embed checks the model, holds the call to the caller's quotas, turns each input text into a vector with
// the model and accounts for the call: its prompt tokens as the model server counts them, and no completion
// tokens.
func (s *Service) Embed(ctx context.Context, req EmbedRequest) (provider.EmbedResponse, QuotaLeft, error) {
	listedAs, err := s.checkModel(ctx, req.Model)
	if err != nil {
		return provider.EmbedResponse{}, QuotaLeft{}, err
	}
	var size int64
	for _, text := range req.Input {
		size += int64(len(text))
	}
	hold, err := s.reserve(ctx, req.UserID, tokensOf(size))
	if err != nil {
		return provider.EmbedResponse{}, QuotaLeft{}, err
	}
	c := s.startCall(caller{userID: req.UserID, apiKeyID: req.APIKeyID, requestID: req.RequestID}, listedAs, tokensOf(size), hold)
	resp, err := s.provider.Embed(ctx, provider.EmbedRequest{Model: req.Model, Input: req.Input})
	if err != nil {
		c.end(failed(ctx), "", nil)
		return provider.EmbedResponse{}, QuotaLeft{}, fmt.Errorf("embed: %w", err)
	}
	c.end(usage.Complete, resp.Model, &provider.Usage{PromptTokens: resp.PromptTokens})
	return resp, quotaLeft(hold), nil
}

// QuotaLeft is what a call leaves of its caller's day quota, by its estimate.
type QuotaLeft struct {
	Tokens  int64
	Applies bool // whether a day quota applies to the caller
}

// quotaLeft returns what hold leaves of its caller's day quota.
func quotaLeft(hold *quota.Hold) QuotaLeft {
	tokens, applies := hold.DayRemaining()
	return QuotaLeft{Tokens: tokens, Applies: applies}
}

// DayQuotaLeft is what the turn's call leaves of its caller's day quota, by its estimate.
func (t *Turn) DayQuotaLeft() QuotaLeft { return quotaLeft(t.hold) }

// bytesPerToken is the text a token stands for in an estimate, about right for English with the usual
// tokenizers; the estimate is corrected with the model server's counts after the call.
const bytesPerToken = 4

// tokensOf estimates the tokens of size bytes of text.
func tokensOf(size int64) int64 { return (size + bytesPerToken - 1) / bytesPerToken }

// promptTokens estimates the tokens of msgs.
func promptTokens(msgs []provider.Message) int64 {
	var size int64
	for _, m := range msgs {
		size += int64(len(m.Content))
	}
	return tokensOf(size)
}

// estimate is the tokens a chat call is expected to use before it is made: its messages' text, and the
// answer's maximum length when the request sets one (num_predict).
func estimate(msgs []provider.Message, options map[string]any) int64 {
	tokens := promptTokens(msgs)
	if n, ok := number(options["num_predict"]); ok && n > 0 {
		tokens += int64(n)
	}
	return tokens
}

// reserve takes a call's estimated tokens from the user's quotas, when there are quotas.
func (s *Service) reserve(ctx context.Context, userID uuid.UUID, tokens int64) (*quota.Hold, error) {
	if s.quotas == nil {
		return nil, nil
	}
	return s.quotas.Reserve(ctx, userID, tokens)
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
	listedAs   string      // the model as the model server lists it
	hold       *quota.Hold // its tokens in the caller's quotas
	prompt     int64       // the estimate of its prompt's tokens
	start      time.Time
	firstToken time.Duration // until the first chunk with content was delivered
	chunks     int           // the chunks with content delivered
}

// startCall starts measuring a call of the model that the model server lists as listedAs, with a prompt
// estimated at prompt tokens, whose tokens hold reserved.
func (s *Service) startCall(who caller, listedAs string, prompt int64, hold *quota.Hold) *call {
	return &call{svc: s, who: who, listedAs: listedAs, prompt: prompt, hold: hold, start: time.Now()}
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

// end gives the call's usage record to the recorder and settles its quotas with the tokens it used: its
// outcome, the model that answered ("" when none did) and the model server's counts. Without counts (a stream that ended early), the completion tokens are
// the chunks with content that were delivered: Ollama sends one token per chunk, and OpenAI-compatible
// servers about one.
func (c *call) end(outcome, answeredBy string, counts *provider.Usage) {
	model := c.listedAs
	if answeredBy != "" && !provider.SameModel(answeredBy, c.listedAs) {
		model = answeredBy // a fallback answered
	}
	r := usage.Record{
		UserID: c.who.userID, APIKeyID: c.who.apiKeyID, Model: model, Upstream: c.svc.provider.Upstream(model),
		CompletionTokens: c.chunks, TimeToFirstToken: c.firstToken, Duration: time.Since(c.start), Outcome: outcome,
		RequestID: c.who.requestID, CreatedAt: time.Now(),
	}
	// Without the server's counts, the quotas are charged the estimated prompt and the chunks delivered, unless
	// the model failed before its first chunk.
	used := c.prompt + int64(c.chunks)
	if outcome == usage.Error && c.chunks == 0 {
		used = 0
	}
	if counts != nil && (counts.PromptTokens > 0 || counts.CompletionTokens > 0) { // zero: the server sent none
		r.PromptTokens, r.CompletionTokens = counts.PromptTokens, counts.CompletionTokens
		used = int64(counts.PromptTokens) + int64(counts.CompletionTokens)
	}
	if err := c.hold.Settle(context.Background(), used); err != nil {
		c.svc.logger.Warn("settle quotas", "request_id", c.who.requestID, "error", err)
	}
	if c.svc.recorder != nil {
		c.svc.recorder.Record(r)
	}
}

// failed is the outcome of a call that ended without its answer: incomplete when its caller stopped it
// (ctx ended: the client left, or the server shut down), an error otherwise.
func failed(ctx context.Context) string {
	if ctx.Err() != nil {
		return usage.Incomplete
	}
	return usage.Error
}
