package chat_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/usage"
)

// recorder keeps the records it is given.
type recorder struct {
	mu      sync.Mutex
	records []usage.Record
}

func (r *recorder) Record(rec usage.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
}

// only returns the one record given, failing the test when there is not exactly one.
func (r *recorder) only(t *testing.T) usage.Record {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.records) != 1 {
		t.Fatalf("%d usage records, want 1: %+v", len(r.records), r.records)
	}
	return r.records[0]
}

func newAccountedService(model *fakeModel) (*chat.Service, *recorder) {
	rec := &recorder{}
	return chat.NewService(newMemStore(), model, rec, nil, testLimits, slog.New(slog.NewTextHandler(io.Discard, nil))), rec
}

// accountedRequest is a turn of a user with an API key, under a request id.
func accountedRequest() chat.Request {
	return chat.Request{UserID: uuid.New(), APIKeyID: uuid.New(), RequestID: "req-1", Model: "tiny", Messages: userSays("hi")}
}

// checkRecord checks a usage record against want, and that it names the caller of req and the fake's upstream.
func checkRecord(t *testing.T, got, want usage.Record, caller chat.Request, streamed bool) {
	t.Helper()
	if got.UserID != caller.UserID || got.APIKeyID != caller.APIKeyID || got.RequestID != caller.RequestID {
		t.Errorf("record of user %s, key %s, request %q; want %s, %s, %q", got.UserID, got.APIKeyID, got.RequestID,
			caller.UserID, caller.APIKeyID, caller.RequestID)
	}
	if got.Model != want.Model || got.Upstream != "local" || got.Outcome != want.Outcome ||
		got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens {
		t.Errorf("record: %s/%s %s, %d+%d tokens; want local/%s %s, %d+%d", got.Upstream, got.Model, got.Outcome,
			got.PromptTokens, got.CompletionTokens, want.Model, want.Outcome, want.PromptTokens, want.CompletionTokens)
	}
	if got.Duration <= 0 || time.Since(got.CreatedAt) > time.Minute {
		t.Errorf("record took %v, created at %v: want a duration, and now", got.Duration, got.CreatedAt)
	}
	if hasFirst := got.TimeToFirstToken > 0; hasFirst != (streamed && want.CompletionTokens > 0) || got.TimeToFirstToken > got.Duration {
		t.Errorf("time to first token %v of %v, want one only for a stream that delivered a chunk", got.TimeToFirstToken, got.Duration)
	}
}

// TestStreamAccounting ends a stream each way it can end and checks its one usage record: the model's counts
// when it gave them, else the chunks delivered.
func TestStreamAccounting(t *testing.T) {
	midway := core.Errorf(core.UpstreamFailed, "the model provider failed in the middle of the answer")
	tests := []struct {
		name       string
		end        error
		answeredBy string
		stopAfter  int  // the consumer breaks after this many chunks; 0 reads to the end
		cancel     bool // the consumer's context ends after the first chunk, as when a client leaves
		want       usage.Record
	}{
		{name: "complete", want: usage.Record{Model: "tiny:latest", Outcome: usage.Complete, PromptTokens: 7, CompletionTokens: 3}},
		{name: "a fallback answers", answeredBy: "other:latest",
			want: usage.Record{Model: "other:latest", Outcome: usage.Complete, PromptTokens: 7, CompletionTokens: 3}},
		{name: "the model fails midway", end: midway,
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Error, CompletionTokens: 2}},
		{name: "the stream ends without a final chunk", end: errEndWithoutFinal,
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Error, CompletionTokens: 2}},
		{name: "the consumer stops early", stopAfter: 1,
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Incomplete, CompletionTokens: 1}},
		{name: "the client leaves", cancel: true, end: context.Canceled,
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Incomplete, CompletionTokens: 2}},
		{name: "the model client panics", end: errPanic,
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Error, CompletionTokens: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, rec := newAccountedService(&fakeModel{chunks: []string{"Hello", " there"}, end: tt.end, answeredBy: tt.answeredBy})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := accountedRequest()
			turn, err := svc.Begin(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() { _ = recover() }() // the panic of the model client goes on to the consumer
				seen := 0
				for _, err := range turn.Stream(ctx) {
					if seen++; err != nil || seen == tt.stopAfter {
						break
					}
					if tt.cancel {
						cancel()
					}
				}
			}()
			checkRecord(t, rec.only(t), tt.want, req, true)
		})
	}
}

// TestCompleteAccounting checks the usage record of a call that is not streamed.
func TestCompleteAccounting(t *testing.T) {
	tests := []struct {
		name string
		end  error
		want usage.Record
	}{
		{name: "complete", want: usage.Record{Model: "tiny:latest", Outcome: usage.Complete, PromptTokens: 7, CompletionTokens: 3}},
		{name: "the model fails", end: core.Errorf(core.UpstreamUnavailable, "down"),
			want: usage.Record{Model: "tiny:latest", Outcome: usage.Error}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, rec := newAccountedService(&fakeModel{chunks: []string{"Hello"}, end: tt.end})
			req := accountedRequest()
			turn, err := svc.Begin(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := turn.Complete(context.Background()); (err != nil) != (tt.end != nil) {
				t.Fatalf("Complete: %v", err)
			}
			checkRecord(t, rec.only(t), tt.want, req, false)
		})
	}
}

// TestEmbedAccounting checks that embeddings are accounted for, with their prompt tokens, and that a model
// that does not exist is refused before any call.
func TestEmbedAccounting(t *testing.T) {
	tests := []struct {
		name  string
		model string
		end   error
		want  *usage.Record // nil: no record
	}{
		{name: "complete", model: "tiny", want: &usage.Record{Model: "tiny:latest", Outcome: usage.Complete, PromptTokens: 5}},
		{name: "the model fails", model: "tiny", end: core.Errorf(core.UpstreamUnavailable, "down"),
			want: &usage.Record{Model: "tiny:latest", Outcome: usage.Error}},
		{name: "no such model", model: "huge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, rec := newAccountedService(&fakeModel{end: tt.end})
			caller := accountedRequest()
			resp, _, err := svc.Embed(context.Background(), chat.EmbedRequest{
				UserID: caller.UserID, APIKeyID: caller.APIKeyID, RequestID: caller.RequestID, Model: tt.model, Input: []string{"hi"},
			})
			if tt.want == nil {
				if core.ErrorCode(err) != core.ModelNotFound || len(rec.records) != 0 {
					t.Fatalf("Embed: %v, %d records; want model_not_found and none", err, len(rec.records))
				}
				return
			}
			if (err != nil) != (tt.end != nil) || (err == nil && len(resp.Embeddings) != 1) {
				t.Fatalf("Embed: %+v, %v", resp, err)
			}
			checkRecord(t, rec.only(t), *tt.want, caller, false)
		})
	}
}
