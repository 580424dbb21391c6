package usage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/usage"
)

func date(y int, m time.Month, d int) *time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return &t
}

// TestReportPeriod checks the period a report asks the store for: the days given, the months around them,
// and the current month by default, always whole UTC days with To exclusive.
func TestReportPeriod(t *testing.T) {
	now := time.Now().UTC()
	thisMonth := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name             string
		from, to         *time.Time
		wantFrom, wantTo time.Time // the query's bounds
		wantCode         core.Code
		wantField        string
	}{
		{name: "both", from: date(2026, 2, 3), to: date(2026, 2, 3),
			wantFrom: *date(2026, 2, 3), wantTo: *date(2026, 2, 4)},
		{name: "only from: the rest of its month", from: date(2028, 2, 10),
			wantFrom: *date(2028, 2, 10), wantTo: *date(2028, 3, 1)},
		{name: "only to: its month until then", to: date(2026, 12, 31),
			wantFrom: *date(2026, 12, 1), wantTo: *date(2027, 1, 1)},
		{name: "neither: the current month", wantFrom: thisMonth, wantTo: thisMonth.AddDate(0, 1, 0)},
		{name: "a year", from: date(2027, 1, 1), to: date(2027, 12, 31),
			wantFrom: *date(2027, 1, 1), wantTo: *date(2028, 1, 1)},
		{name: "a leap year", from: date(2028, 1, 1), to: date(2028, 12, 31),
			wantFrom: *date(2028, 1, 1), wantTo: *date(2029, 1, 1)},
		{name: "to before from", from: date(2026, 2, 3), to: date(2026, 2, 2), wantCode: core.Invalid, wantField: "to"},
		{name: "366 days after from", from: date(2026, 1, 1), to: date(2027, 1, 2), wantCode: core.Invalid, wantField: "to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{}
			user := uuid.New()
			report, err := usage.NewService(st).Report(context.Background(), usage.ReportRequest{
				UserID: user, From: tt.from, To: tt.to, GroupBy: usage.ByModel,
			})
			if tt.wantCode != "" {
				var e *core.Error
				if core.ErrorCode(err) != tt.wantCode || !errors.As(err, &e) || e.Field != tt.wantField {
					t.Fatalf("error %v, want %s naming %q", err, tt.wantCode, tt.wantField)
				}
				if len(st.queries) != 0 {
					t.Error("the store was asked anyway")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := usage.Query{UserID: user, From: tt.wantFrom, To: tt.wantTo, GroupBy: usage.ByModel}
			if len(st.queries) != 1 || st.queries[0] != want {
				t.Fatalf("queries %+v, want %+v", st.queries, want)
			}
			if !report.From.Equal(tt.wantFrom) || !report.To.Equal(tt.wantTo.AddDate(0, 0, -1)) {
				t.Errorf("report from %v to %v, want %v to the day before %v", report.From, report.To, tt.wantFrom, tt.wantTo)
			}
		})
	}
}

// TestReportGrouping checks that a grouping the service does not know is refused.
func TestReportGrouping(t *testing.T) {
	_, err := usage.NewService(&fakeStore{}).Report(context.Background(), usage.ReportRequest{GroupBy: "hour"})
	if core.ErrorCode(err) != core.Invalid {
		t.Fatalf("error %v, want invalid", err)
	}
}
