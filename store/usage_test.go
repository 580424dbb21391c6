package store_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/usage"
)

// TestUsageRecords stores records with COPY and reads every column back.
func TestUsageRecords(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	key := uuid.New()
	records := []usage.Record{
		{UserID: uuid.New(), APIKeyID: key, Model: "gpu/llama-3.2-3b", Upstream: "gpu", PromptTokens: 26,
			CompletionTokens: 282, TimeToFirstToken: 340 * time.Millisecond, Duration: 4883 * time.Millisecond,
			Outcome: usage.Complete, RequestID: "req-1", CreatedAt: at},
		{UserID: uuid.New(), Model: "llama3.2:latest", Upstream: "ollama", Duration: time.Second, Outcome: usage.Error, CreatedAt: at},
	}
	if err := st.InsertUsage(ctx, records); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `SELECT user_id, api_key_id, model, upstream, prompt_tokens, completion_tokens, ttft_ms,
		duration_ms, outcome, request_id, created_at FROM usage_records ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		UserID             uuid.UUID
		APIKeyID           *uuid.UUID
		Model, Upstream    string
		Prompt, Completion int32
		TTFT               *int32
		Duration           int32
		Outcome, RequestID string
		CreatedAt          time.Time
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	ttft := int32(340)
	want := []row{
		{records[0].UserID, &key, "gpu/llama-3.2-3b", "gpu", 26, 282, &ttft, 4883, usage.Complete, "req-1", at},
		{records[1].UserID, nil, "llama3.2:latest", "ollama", 0, 0, nil, 1000, usage.Error, "", at},
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.UserID != w.UserID || !equalPtr(g.APIKeyID, w.APIKeyID) || g.Model != w.Model || g.Upstream != w.Upstream ||
			g.Prompt != w.Prompt || g.Completion != w.Completion || !equalPtr(g.TTFT, w.TTFT) || g.Duration != w.Duration ||
			g.Outcome != w.Outcome || g.RequestID != w.RequestID || !g.CreatedAt.Equal(w.CreatedAt) {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
	}
}

func equalPtr[T comparable](a, b *T) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// TestUsageTotals sums records by each grouping, within the bounds of the query, and never counts another
// user's records in a user's report.
func TestUsageTotals(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada, bob := uuid.New(), uuid.New()
	if ada.String() > bob.String() {
		ada, bob = bob, ada // totals by user come in the order of their ids
	}
	march := func(day, hour int) time.Time { return time.Date(2026, 3, day, hour, 0, 0, 0, time.UTC) }
	rec := func(user uuid.UUID, model string, at time.Time, prompt, completion int) usage.Record {
		return usage.Record{UserID: user, Model: model, Upstream: "ollama", PromptTokens: prompt, CompletionTokens: completion,
			Outcome: usage.Complete, CreatedAt: at}
	}
	err := st.InsertUsage(ctx, []usage.Record{
		rec(ada, "a:latest", march(1, 0), 1, 10),  // the first instant of the period
		rec(ada, "b:latest", march(1, 23), 2, 20), // the same UTC day
		rec(ada, "a:latest", march(2, 12), 4, 40),
		rec(ada, "a:latest", march(3, 0), 1000, 1000),                        // the first instant after the period
		rec(ada, "a:latest", march(1, 0).Add(-time.Microsecond), 1000, 1000), // the last instant before it
		rec(bob, "a:latest", march(2, 1), 8, 80),
	})
	if err != nil {
		t.Fatal(err)
	}
	day := func(d int) time.Time { return march(d, 0) }
	tests := []struct {
		name  string
		user  uuid.UUID
		group usage.Grouping
		want  []usage.Total
	}{
		{name: "a user by day", user: ada, group: usage.ByDay, want: []usage.Total{
			{Day: day(1), Requests: 2, PromptTokens: 3, CompletionTokens: 30},
			{Day: day(2), Requests: 1, PromptTokens: 4, CompletionTokens: 40},
		}},
		{name: "a user by model", user: ada, group: usage.ByModel, want: []usage.Total{
			{Model: "a:latest", Requests: 2, PromptTokens: 5, CompletionTokens: 50},
			{Model: "b:latest", Requests: 1, PromptTokens: 2, CompletionTokens: 20},
		}},
		{name: "another user by model", user: bob, group: usage.ByModel, want: []usage.Total{
			{Model: "a:latest", Requests: 1, PromptTokens: 8, CompletionTokens: 80},
		}},
		{name: "a user without calls", user: uuid.New(), group: usage.ByDay, want: []usage.Total{}},
		{name: "everybody by day", group: usage.ByDay, want: []usage.Total{
			{Day: day(1), Requests: 2, PromptTokens: 3, CompletionTokens: 30},
			{Day: day(2), Requests: 2, PromptTokens: 12, CompletionTokens: 120},
		}},
		{name: "everybody by model", group: usage.ByModel, want: []usage.Total{
			{Model: "a:latest", Requests: 3, PromptTokens: 13, CompletionTokens: 130},
			{Model: "b:latest", Requests: 1, PromptTokens: 2, CompletionTokens: 20},
		}},
		{name: "everybody by user", group: usage.ByUser, want: []usage.Total{
			{UserID: ada, Requests: 3, PromptTokens: 7, CompletionTokens: 70},
			{UserID: bob, Requests: 1, PromptTokens: 8, CompletionTokens: 80},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := st.UsageTotals(ctx, usage.Query{UserID: tt.user, From: day(1), To: day(3), GroupBy: tt.group})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(a, b usage.Total) bool { return a == b }) {
				t.Errorf("totals = %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

// statements records the SQL and arguments of every query a pool runs.
type statements struct {
	mu   sync.Mutex
	seen []pgx.TraceQueryStartData
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, data)
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) last() pgx.TraceQueryStartData {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[len(s.seen)-1]
}

// usageRows is how many records TestUsageReportPlans generates.
const usageRows = 1_000_000

// TestUsageReportPlans generates a million records (a thousand users, a year of calls) and checks that every
// report query, as the store sends it, is planned as an index scan of usage_records and never a sequential
// scan: PostgreSQL's own EXPLAIN of the statement with its arguments.
func TestUsageReportPlans(t *testing.T) {
	ctx := context.Background()
	traced := &statements{}
	pool, err := store.Open(ctx, dbtest.NewURL(t), traced)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	_, err = pool.Exec(ctx, `
		INSERT INTO usage_records (user_id, model, upstream, prompt_tokens, completion_tokens, duration_ms, outcome, created_at)
		SELECT md5((i % 1000)::text)::uuid, 'model-' || (i % 7), 'ollama', i % 500, i % 900, 1000, 'complete',
		       $1::timestamptz - (i % 525600) * interval '1 minute'
		FROM generate_series(1, $2::int) AS i`, now, usageRows)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) usage_records"); err != nil {
		t.Fatal(err)
	}
	var someone uuid.UUID
	if err := pool.QueryRow(ctx, "SELECT md5('42')::uuid").Scan(&someone); err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	from := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for _, user := range []uuid.UUID{someone, uuid.Nil} {
		for _, group := range []usage.Grouping{usage.ByDay, usage.ByModel, usage.ByUser} {
			q := usage.Query{UserID: user, From: from, To: from.AddDate(0, 1, 0), GroupBy: group}
			t.Run(string(group)+" of "+map[bool]string{true: "everybody", false: "a user"}[user == uuid.Nil], func(t *testing.T) {
				totals, err := st.UsageTotals(ctx, q)
				if err != nil || len(totals) == 0 {
					t.Fatalf("totals: %d, %v", len(totals), err)
				}
				stmt := traced.last()
				var plan []struct{ Plan planNode }
				if err := pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+stmt.SQL, stmt.Args...).Scan(&plan); err != nil {
					t.Fatal(err)
				}
				scans := plan[0].Plan.scans("usage_records")
				t.Logf("usage_records read by %v", scans)
				if !slices.ContainsFunc(scans, func(s string) bool { return strings.HasPrefix(s, "Index ") }) ||
					slices.ContainsFunc(scans, func(s string) bool { return strings.Contains(s, "Seq Scan") }) {
					text, _ := json.MarshalIndent(plan, "", "  ")
					t.Errorf("usage_records is read by %v, want an index scan and no sequential scan; plan:\n%s", scans, text)
				}
			})
		}
	}
}

// planNode is a node of a plan in EXPLAIN's JSON format.
type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Plans    []planNode `json:"Plans"`
}

// scans returns the nodes of the plan that read relation, such as "Index Only Scan using some_idx".
func (n planNode) scans(relation string) []string {
	var out []string
	if n.Relation == relation {
		out = append(out, strings.TrimSuffix(n.NodeType+" using "+n.Index, " using "))
	}
	for _, child := range n.Plans {
		out = append(out, child.scans(relation)...)
	}
	return out
}
