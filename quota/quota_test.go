package quota_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/quota"
	"github.com/deepersensor/deepersensor/ratelimit"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/usage"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// fixture is a user in a fresh database, and Redis budgets under a prefix of the test's own.
type fixture struct {
	st     *store.Store
	redis  *redis.Client
	prefix string
	clock  *clock
	user   auth.User
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := store.New(dbtest.New(t))
	user, err := st.CreateUser(context.Background(), "q-"+rand.Text()+"@example.com", "hash")
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { _ = client.Close() })
	prefix := "dstest:" + rand.Text() + ":"
	t.Cleanup(func() { forgetRedis(client, prefix) })
	return &fixture{st: st, redis: client, prefix: prefix, clock: &clock{now: time.Date(2026, 11, 29, 23, 59, 0, 0, time.UTC)}, user: user}
}

// forgetRedis deletes the keys under prefix, as a restarted Redis would have lost them.
func forgetRedis(client *redis.Client, prefix string) {
	ctx := context.Background()
	keys, _ := client.Keys(ctx, prefix+"*").Result()
	if len(keys) > 0 {
		client.Del(ctx, keys...)
	}
}

// service returns quotas with these defaults, as one instance of the service would make them.
func (f *fixture) service(defaults quota.Limits) *quota.Service {
	return quota.New(defaults, f.st, ratelimit.NewRedisBudgets(f.redis, f.prefix), f.clock.Now)
}

// reserve reserves tokens and settles the call with used tokens, or returns the refusal.
func reserve(t *testing.T, q *quota.Service, f *fixture, tokens, used int64) *core.Quota {
	t.Helper()
	hold, err := q.Reserve(context.Background(), f.user.ID, tokens)
	var e *core.Error
	if errors.As(err, &e) && e.Code == core.QuotaExceeded {
		if e.RetryAfter <= 0 {
			t.Errorf("refusal without Retry-After: %+v", e)
		}
		return e.Quota
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.Settle(context.Background(), used); err != nil {
		t.Fatal(err)
	}
	return nil
}

func TestDayQuotaRefusesTheCallThatWouldCrossItAndResetsAtMidnight(t *testing.T) {
	f := newFixture(t)
	q := f.service(quota.Limits{PerDay: 1000})
	// Estimates of 400 that use 300 each: 300, 600, 900 are used after three calls.
	for i := range 3 {
		if refused := reserve(t, q, f, 400, 300); refused != nil {
			t.Fatalf("call %d refused: %+v", i, refused)
		}
	}
	hold, err := q.Reserve(context.Background(), f.user.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	if left, ok := hold.DayRemaining(); !ok || left != 50 {
		t.Fatalf("day remaining = %d, %v; want 50 (1000 - 900 - 50)", left, ok)
	}
	if err := hold.Settle(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
	refused := reserve(t, q, f, 200, 0) // 950 + 200 would cross 1000
	midnight := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	want := core.Quota{Name: quota.Day, Limit: 1000, Remaining: 50, Reset: midnight}
	if refused == nil || *refused != want {
		t.Fatalf("refusal = %+v, want %+v", refused, want)
	}
	// A call that fits what is left passes.
	if refused := reserve(t, q, f, 50, 50); refused != nil {
		t.Fatalf("a call of what is left refused: %+v", refused)
	}
	f.clock.Set(midnight.Add(time.Second))
	if refused := reserve(t, q, f, 200, 200); refused != nil {
		t.Fatalf("refused after midnight: %+v", refused)
	}
}

func TestMonthQuota(t *testing.T) {
	f := newFixture(t)
	q := f.service(quota.Limits{PerDay: 1000, PerMonth: 1500})
	if refused := reserve(t, q, f, 900, 900); refused != nil {
		t.Fatal(refused)
	}
	f.clock.Set(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)) // a new day, the same month
	refused := reserve(t, q, f, 700, 0)
	want := core.Quota{Name: quota.Month, Limit: 1500, Remaining: 600, Reset: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	if refused == nil || *refused != want {
		t.Fatalf("refusal = %+v, want %+v", refused, want)
	}
}

func TestTokensPerMinuteRefusal(t *testing.T) {
	f := newFixture(t)
	q := f.service(quota.Limits{PerMinute: 600})
	if refused := reserve(t, q, f, 500, 500); refused != nil {
		t.Fatal(refused)
	}
	refused := reserve(t, q, f, 200, 0)
	if refused == nil || refused.Name != quota.Minute || refused.Limit != 600 || refused.Remaining != 0 {
		t.Fatalf("refusal = %+v, want the minute's", refused)
	}
	if wait := refused.Reset.Sub(f.clock.Now()); wait < 9*time.Second || wait > 11*time.Second {
		t.Fatalf("minute resets in %s, want about 10s (100 tokens at 600 per minute)", wait)
	}
}

// The totals are rebuilt from the usage records when Redis lost them, and a new instance sees them.
func TestTotalsRebuiltFromUsageRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.Now()
	records := []usage.Record{
		{UserID: f.user.ID, Model: "m", PromptTokens: 300, CompletionTokens: 400, Outcome: usage.Complete, CreatedAt: now.Add(-time.Hour)},
		{UserID: f.user.ID, Model: "m", PromptTokens: 100, CompletionTokens: 0, Outcome: usage.Error, CreatedAt: now.Add(-48 * time.Hour)},
	}
	if err := f.st.InsertUsage(ctx, records); err != nil {
		t.Fatal(err)
	}
	q := f.service(quota.Limits{PerDay: 1000, PerMonth: 1000})
	refused := reserve(t, q, f, 301, 0)
	if refused == nil || refused.Name != quota.Day || refused.Remaining != 300 {
		t.Fatalf("refusal = %+v; want the day's with 300 left (700 used today)", refused)
	}
	// The month holds both records: 800 used.
	refused = reserve(t, q, f, 201, 0)
	if refused == nil || refused.Name != quota.Month || refused.Remaining != 200 {
		t.Fatalf("refusal = %+v; want the month's with 200 left", refused)
	}
	if refused := reserve(t, q, f, 150, 150); refused != nil {
		t.Fatal(refused)
	}
	// Redis restarts: the call of 150 is in no record yet (the usage writer stores it within a second), so
	// after the rebuild the totals are those of the records.
	forgetRedis(f.redis, f.prefix)
	if err := f.st.InsertUsage(ctx, []usage.Record{{UserID: f.user.ID, Model: "m", CompletionTokens: 150, Outcome: usage.Complete, CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	restarted := f.service(quota.Limits{PerDay: 1000, PerMonth: 1000})
	refused = reserve(t, restarted, f, 51, 0)
	if refused == nil || refused.Name != quota.Month || refused.Remaining != 50 {
		t.Fatalf("after the restart: refusal = %+v; want the month's with 50 left", refused)
	}
}

func TestAdminOverrides(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	q := f.service(quota.Limits{PerDay: 100})
	if refused := reserve(t, q, f, 101, 0); refused == nil || refused.Limit != 100 {
		t.Fatalf("default day quota: refusal = %+v", refused)
	}
	set := func(day, month *int64) {
		t.Helper()
		if _, _, err := f.st.SetQuotas(ctx, f.user.ID, auth.Quotas{TokensPerDay: day, TokensPerMonth: month}); err != nil {
			t.Fatal(err)
		}
		q.Forget(f.user.ID)
	}
	thousand, zero := int64(1000), int64(0)
	set(&thousand, nil)
	if refused := reserve(t, q, f, 500, 500); refused != nil {
		t.Fatalf("with the day quota raised to 1000: refused %+v", refused)
	}
	if refused := reserve(t, q, f, 501, 0); refused == nil || refused.Limit != 1000 || refused.Remaining != 500 {
		t.Fatalf("override: refusal = %+v", refused)
	}
	set(&zero, nil) // 0: no day quota for this user
	hold, err := q.Reserve(ctx, f.user.ID, 10_000)
	if err != nil || hold != nil {
		t.Fatalf("without any quota: hold %v, %v; want none", hold, err)
	}
	if _, ok := hold.DayRemaining(); ok {
		t.Fatal("a day remaining without a day quota")
	}
	set(nil, nil) // back to the default
	if refused := reserve(t, q, f, 101, 0); refused == nil || refused.Limit != 100 {
		t.Fatalf("back to the default: refusal = %+v", refused)
	}
}
