package store

import (
	"context"
	"fmt"
	"math"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
	"github.com/deepersensor/deepersensor/usage"
)

var _ usage.Store = (*Store)(nil)

// InsertUsage stores records in one COPY.
func (s *Store) InsertUsage(ctx context.Context, records []usage.Record) error {
	rows := make([]db.InsertUsageRecordsParams, len(records))
	for i, r := range records {
		rows[i] = db.InsertUsageRecordsParams{
			UserID: r.UserID, Model: r.Model, Upstream: r.Upstream, PromptTokens: clampInt32(int64(r.PromptTokens)),
			CompletionTokens: clampInt32(int64(r.CompletionTokens)), DurationMs: clampInt32(r.Duration.Milliseconds()),
			Outcome: r.Outcome, RequestID: r.RequestID, CreatedAt: r.CreatedAt,
		}
		if r.APIKeyID != uuid.Nil {
			rows[i].ApiKeyID = &r.APIKeyID
		}
		if r.TimeToFirstToken > 0 {
			ms := clampInt32(r.TimeToFirstToken.Milliseconds())
			rows[i].TtftMs = &ms
		}
	}
	if _, err := s.q.InsertUsageRecords(ctx, rows); err != nil {
		return fmt.Errorf("insert %d usage records: %w", len(records), interpretError(err, "usage record"))
	}
	return nil
}

// clampInt32 keeps a count within the int32 columns of usage_records.
func clampInt32(n int64) int32 {
	return int32(max(min(n, math.MaxInt32), math.MinInt32))
}

// UsageTotals sums the records that q selects: one user's, with an index-only scan of
// usage_records_user_id_created_at_idx, or everybody's, with one of usage_records_created_at_idx.
func (s *Store) UsageTotals(ctx context.Context, q usage.Query) ([]usage.Total, error) {
	params := db.AllUsageParams{
		ByDay: q.GroupBy == usage.ByDay, ByModel: q.GroupBy == usage.ByModel, ByUser: q.GroupBy == usage.ByUser,
		FromTime: q.From, ToTime: q.To,
	}
	// A report may miss the last moments' records, which the usage writer stores in batches anyway.
	rows, err := staleRead(ctx, s, nil, func(dq *db.Queries) ([]db.AllUsageRow, error) {
		if q.UserID == uuid.Nil {
			return dq.AllUsage(ctx, params)
		}
		userRows, err := dq.UserUsage(ctx, db.UserUsageParams{
			ByDay: params.ByDay, ByModel: params.ByModel, ByUser: params.ByUser, UserID: q.UserID,
			FromTime: params.FromTime, ToTime: params.ToTime,
		})
		rows := make([]db.AllUsageRow, len(userRows))
		for i, r := range userRows {
			rows[i] = db.AllUsageRow(r)
		}
		return rows, err
	})
	if err != nil {
		return nil, fmt.Errorf("sum usage by %s: %w", q.GroupBy, interpretError(err, "usage"))
	}
	totals := make([]usage.Total, len(rows))
	for i, r := range rows {
		totals[i] = usage.Total{
			Model: r.Model, UserID: r.UserID, Requests: r.Requests, PromptTokens: r.PromptTokens,
			CompletionTokens: r.CompletionTokens,
		}
		if r.Day.Valid {
			totals[i].Day = r.Day.Time // a UTC midnight
		}
	}
	return totals, nil
}
