package usage

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// maxReportDays is the longest period a report may cover, so that each report reads a bounded range of its
// index.
const maxReportDays = 366

// Grouping is what a report sums its records by.
type Grouping string

// The groupings of reports.
const (
	ByDay   Grouping = "day"   // UTC days
	ByModel Grouping = "model" // models as GET /v1/models lists them
	ByUser  Grouping = "user"
)

// Query selects the records a report sums.
type Query struct {
	UserID   uuid.UUID // one user's records; uuid.Nil for everybody's
	From, To time.Time // records created at From or later and before To
	GroupBy  Grouping
}

// Total sums the records of one group. Only the field of the report's grouping is set: Day, Model or UserID.
type Total struct {
	Day              time.Time // a UTC midnight
	Model            string
	UserID           uuid.UUID
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
}

// ReportRequest asks for a report.
type ReportRequest struct {
	UserID uuid.UUID // whose calls; uuid.Nil for everybody's
	// From and To are the first and the last day, in UTC, of the period. Without To it ends with the month
	// of From, without From it starts with the month of To, and without either it is the current month.
	From, To *time.Time
	GroupBy  Grouping
}

// Report is what a period's records sum to.
type Report struct {
	From, To time.Time // the first and the last day of the period, UTC midnights
	Totals   []Total   // in the order of their day, model or user
}

// Service answers usage reports.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService returns a Service reading st.
func NewService(st Store) *Service {
	return &Service{store: st, now: time.Now}
}

// Report sums the records of a period, by day, model or user. A period that ends before it starts or is
// longer than maxReportDays is a core.Invalid error naming "to".
func (s *Service) Report(ctx context.Context, req ReportRequest) (Report, error) {
	switch req.GroupBy {
	case ByDay, ByModel, ByUser:
	default:
		return Report{}, core.InvalidField("group_by", "must be day, model or user")
	}
	from, to := period(req.From, req.To, s.now())
	if to.Before(from) {
		return Report{}, core.InvalidField("to", "must not be before from")
	}
	if to.Sub(from) >= maxReportDays*24*time.Hour {
		return Report{}, core.InvalidField("to", fmt.Sprintf("must be less than %d days after from", maxReportDays))
	}
	totals, err := s.store.UsageTotals(ctx, Query{UserID: req.UserID, From: from, To: to.AddDate(0, 0, 1), GroupBy: req.GroupBy})
	if err != nil {
		return Report{}, fmt.Errorf("usage report: %w", err)
	}
	return Report{From: from, To: to, Totals: totals}, nil
}

// period returns the first and the last day of a report's period, as UTC midnights: those given, with the
// month of the other, or of now, filling in what is missing.
func period(from, to *time.Time, now time.Time) (time.Time, time.Time) {
	switch {
	case from != nil && to != nil:
		return day(*from), day(*to)
	case from != nil:
		return day(*from), monthOf(*from).AddDate(0, 1, -1)
	case to != nil:
		return monthOf(*to), day(*to)
	}
	return monthOf(now), monthOf(now).AddDate(0, 1, -1)
}

// day returns the UTC midnight that starts t's day.
func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// monthOf returns the UTC midnight that starts t's month.
func monthOf(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}
