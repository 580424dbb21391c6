package chat_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/quota"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// noUsage is a quota.Store of users without own quotas or past usage.
type noUsage struct{}

func (noUsage) UserQuotas(context.Context, uuid.UUID) (day, month *int64, err error) {
	return nil, nil, nil
}
func (noUsage) TokensUsed(context.Context, uuid.UUID, time.Time, time.Time) (day, month int64, err error) {
	return 0, 0, nil
}

// TestQuotasHoldEveryTurn: a turn reserves its estimate (its text at 4 bytes a token, and num_predict)
// before anything is stored, settles with the model's counts, and gives the estimate back when it could
// not start.
func TestQuotasHoldEveryTurn(t *testing.T) {
	st := newMemStore()
	quotas := quota.New(quota.Limits{PerDay: 100}, noUsage{}, ratelimit.NewMemoryBudgets(ratelimit.MemoryConfig{}), nil)
	limits := testLimits
	limits.MaxStoredBytes = 20
	svc := chat.NewService(st, &fakeModel{chunks: []string{"ok"}}, nil, quotas, limits, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	user := uuid.New()
	ask := func(text string, predict int) (*chat.Turn, error) {
		req := chat.Request{UserID: user, Model: "tiny", Messages: userSays(text)}
		if predict > 0 {
			req.Options = map[string]any{"num_predict": float64(predict)}
		}
		return svc.Begin(ctx, req)
	}

	turn, err := ask("12345678", 30) // 2 + 30 tokens
	if err != nil {
		t.Fatal(err)
	}
	if left := turn.DayQuotaLeft(); !left.Applies || left.Tokens != 68 {
		t.Fatalf("left after the estimate = %+v, want 68", left)
	}
	if _, err := turn.Complete(ctx); err != nil { // the fake counts 7 + 3 tokens
		t.Fatal(err)
	}
	// 10 used: a turn of 91 would cross 100 and is refused before anything is stored.
	convs, _ := st.Conversations(ctx, user, nil, 10)
	if _, err := ask("x", 90); core.ErrorCode(err) != core.QuotaExceeded {
		t.Fatalf("a turn past the quota: %v, want quota_exceeded", err)
	}
	if after, _ := st.Conversations(ctx, user, nil, 10); len(after) != len(convs) {
		t.Fatalf("a refused turn was stored: %d conversations, want %d", len(after), len(convs))
	}
	// A turn the store refuses (more than the user may store) gives its estimate back.
	if _, err := ask(strings.Repeat("y", 40), 0); core.ErrorCode(err) != core.StorageFull {
		t.Fatalf("a turn past the storage cap: %v, want storage_full", err)
	}
	turn, err = ask("x", 89) // 1 + 89 tokens, with 10 used
	if err != nil {
		t.Fatalf("a turn that fits what is left: %v", err)
	}
	if left := turn.DayQuotaLeft(); left.Tokens != 0 {
		t.Fatalf("left = %+v, want 0", left)
	}
}

// TestQuotasChargeCallsWithoutCounts: a stream that ends before the model's counts is charged its estimated
// prompt and the chunks delivered; a model that fails before its first chunk costs nothing.
func TestQuotasChargeCallsWithoutCounts(t *testing.T) {
	tests := []struct {
		name  string
		model *fakeModel
		stop  bool // the consumer stops after the first chunk
		used  int64
	}{
		{"the client leaves", &fakeModel{chunks: []string{"a", "b", "c"}}, true, 100 + 1},
		{"the model fails at once", &fakeModel{end: core.Errorf(core.UpstreamUnavailable, "down")}, false, 0},
		{"the model fails midway", &fakeModel{chunks: []string{"a", "b"}, end: core.Errorf(core.UpstreamFailed, "broke")}, false, 100 + 2},
		{"complete, with counts", &fakeModel{chunks: []string{"a"}}, false, 7 + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			quotas := quota.New(quota.Limits{PerDay: 1000}, noUsage{}, ratelimit.NewMemoryBudgets(ratelimit.MemoryConfig{}), nil)
			svc := chat.NewService(newMemStore(), tt.model, nil, quotas, testLimits, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx := context.Background()
			user := uuid.New()
			turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays(strings.Repeat("z", 400))})
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range turn.Stream(ctx) {
				if err != nil || tt.stop {
					break
				}
			}
			next, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("x")})
			if err != nil {
				t.Fatal(err)
			}
			if left := next.DayQuotaLeft().Tokens; left != 1000-tt.used-1 {
				t.Fatalf("left after the call = %d, want %d: the call was charged %d, want %d", left, 1000-tt.used-1, 1000-1-left, tt.used)
			}
		})
	}
}
