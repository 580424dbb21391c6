// Package usage is the accounting of model calls: one Record per call, whatever the route, which a Writer
// stores in batches off the request path, and the reports that sum the records by day, model or user.
package usage

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// The outcomes of a model call.
const (
	// Complete: the model finished its answer.
	Complete = "complete"
	// Incomplete: the caller stopped the call before the model finished, such as a client that left.
	Incomplete = "incomplete"
	// Error: the call failed, at the model server or on the way.
	Error = "error"
)

// Record is the usage of one model call.
type Record struct {
	UserID   uuid.UUID
	APIKeyID uuid.UUID // the API key that authenticated the call, or uuid.Nil for an access token
	Model    string    // as GET /v1/models lists it, such as "llama3.2:latest" or "gpu/llama-3.2-3b"
	Upstream string    // the model server that serves Model, such as "gpu"
	// PromptTokens and CompletionTokens are the model server's counts. When a stream ended without them,
	// CompletionTokens is the number of chunks with content that it delivered (about one token each).
	PromptTokens     int
	CompletionTokens int
	TimeToFirstToken time.Duration // until the first chunk with content; zero when none came or not streamed
	Duration         time.Duration // of the whole call
	Outcome          string        // Complete, Incomplete or Error
	RequestID        string
	CreatedAt        time.Time // when the call ended
}

// Store is what this package needs from the database.
type Store interface {
	// InsertUsage stores records, all of them or none.
	InsertUsage(ctx context.Context, records []Record) error
	// UsageTotals sums the records that q selects, a Total per group.
	UsageTotals(ctx context.Context, q Query) ([]Total, error)
}
