package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

// budgetBackends returns each Budgets implementation, fresh for one test.
func budgetBackends(t *testing.T) map[string]ratelimit.Budgets {
	client := mustRedis(t)
	return map[string]ratelimit.Budgets{
		"memory": ratelimit.NewMemoryBudgets(ratelimit.MemoryConfig{}),
		"redis":  ratelimit.NewRedisBudgets(client, mustPrefix(t, client)),
	}
}

func TestBudgetsTotals(t *testing.T) {
	ends := time.Now().Add(time.Hour)
	day := func(limit, base int64) ratelimit.BudgetRequest {
		return ratelimit.BudgetRequest{Tokens: 40, Totals: []ratelimit.Total{{Window: "day:x", Limit: limit, Ends: ends, Base: base}}}
	}
	for name, b := range budgetBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			d, err := b.Take(ctx, "u1", day(100, -1))
			if err != nil || !d.Missing || d.Allowed {
				t.Fatalf("take without a counter or a base = %+v, %v; want missing", d, err)
			}
			steps := []struct {
				base    int64
				allowed bool
				used    int64
			}{
				{base: 10, allowed: true, used: 50},  // the base starts the total
				{base: -1, allowed: true, used: 90},  // the counter exists: no base needed
				{base: -1, allowed: false, used: 90}, // 90 + 40 would cross 100
			}
			for i, s := range steps {
				d, err := b.Take(ctx, "u1", day(100, s.base))
				if err != nil || d.Allowed != s.allowed || d.Missing || d.Used[0] != s.used {
					t.Fatalf("step %d: take = %+v, %v; want allowed %v, used %d", i, d, err, s.allowed, s.used)
				}
				if !s.allowed && d.Refused != 0 {
					t.Fatalf("step %d: refused by %d, want the total 0", i, d.Refused)
				}
			}
			// The first call used 5, not 40: 35 come back, and the refused call fits.
			if err := b.Adjust(ctx, "u1", day(100, -1), 5); err != nil {
				t.Fatal(err)
			}
			if d, err := b.Take(ctx, "u1", day(100, -1)); err != nil || !d.Allowed || d.Used[0] != 95 {
				t.Fatalf("take after the correction = %+v, %v; want allowed with 95 used", d, err)
			}
			// A limit of 0 counts without a cap; another key has totals of its own.
			if d, err := b.Take(ctx, "u1", day(0, -1)); err != nil || !d.Allowed || d.Used[0] != 135 {
				t.Fatalf("take without a cap = %+v, %v", d, err)
			}
			if d, err := b.Take(ctx, "u2", day(100, 0)); err != nil || !d.Allowed || d.Used[0] != 40 {
				t.Fatalf("another key = %+v, %v", d, err)
			}
			// Adjusting a total that has no counter creates none.
			if err := b.Adjust(ctx, "u3", day(100, -1), 0); err != nil {
				t.Fatal(err)
			}
			if d, err := b.Take(ctx, "u3", day(100, -1)); err != nil || !d.Missing {
				t.Fatalf("take after adjusting nothing = %+v, %v; want missing", d, err)
			}
		})
	}
}

func TestBudgetsRefuseAllOrNothing(t *testing.T) {
	ends := time.Now().Add(time.Hour)
	req := ratelimit.BudgetRequest{Tokens: 60, PerMinute: 1000, Totals: []ratelimit.Total{
		{Window: "day:x", Limit: 1000, Ends: ends, Base: 0},
		{Window: "month:x", Limit: 100, Ends: ends, Base: 0},
	}}
	for name, b := range budgetBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if d, err := b.Take(ctx, "k", req); err != nil || !d.Allowed {
				t.Fatalf("first take = %+v, %v", d, err)
			}
			d, err := b.Take(ctx, "k", req)
			if err != nil || d.Allowed || d.Refused != 1 || d.Used[0] != 60 || d.Used[1] != 60 {
				t.Fatalf("second take = %+v, %v; want refused by the month with 60 used in each", d, err)
			}
			// The refused take changed nothing: a small one still fits the month.
			small := req
			small.Tokens = 40
			if d, err := b.Take(ctx, "k", small); err != nil || !d.Allowed || d.Used[1] != 100 {
				t.Fatalf("small take = %+v, %v", d, err)
			}
		})
	}
}

func TestBudgetsMinuteBucket(t *testing.T) {
	for name, b := range budgetBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			take := func(tokens int64) ratelimit.BudgetDecision {
				t.Helper()
				d, err := b.Take(ctx, "k", ratelimit.BudgetRequest{Tokens: tokens, PerMinute: 600})
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			if d := take(500); !d.Allowed {
				t.Fatalf("500 of 600 = %+v", d)
			}
			d := take(200)
			// 100 tokens are left; 100 more come back in 10s (600 per minute).
			if d.Allowed || d.Refused != -1 || d.RetryAfter < 9*time.Second || d.RetryAfter > 10*time.Second {
				t.Fatalf("200 more = %+v; want refused by the bucket, retry in about 10s", d)
			}
			if d := take(100); !d.Allowed {
				t.Fatalf("the last 100 = %+v", d)
			}
			// The call of 500 used 200: 300 come back, so 200 fit again.
			if err := b.Adjust(ctx, "k", ratelimit.BudgetRequest{Tokens: 500, PerMinute: 600}, 200); err != nil {
				t.Fatal(err)
			}
			if d := take(200); !d.Allowed {
				t.Fatalf("200 after the correction = %+v", d)
			}
			// A call larger than the whole bucket passes when the bucket is full: the key "big" is new. It
			// takes the whole bucket, and gives nothing back when it used more than a bucket, however much
			// less than its estimate.
			big := ratelimit.BudgetRequest{Tokens: 5000, PerMinute: 600}
			if d, err := b.Take(ctx, "big", big); err != nil || !d.Allowed {
				t.Fatalf("a call larger than the bucket = %+v, %v", d, err)
			}
			if err := b.Adjust(ctx, "big", big, 1500); err != nil {
				t.Fatal(err)
			}
			if d, err := b.Take(ctx, "big", ratelimit.BudgetRequest{Tokens: 100, PerMinute: 600}); err != nil || d.Allowed {
				t.Fatalf("a call right after a call larger than the bucket = %+v, %v; want refused", d, err)
			}
		})
	}
}

func TestRedisBudgetsSharedByInstances(t *testing.T) {
	client := mustRedis(t)
	prefix := mustPrefix(t, client)
	a := ratelimit.NewRedisBudgets(client, prefix)
	b := ratelimit.NewRedisBudgets(mustClient(t, redisOptions(t)), prefix)
	req := ratelimit.BudgetRequest{Tokens: 300, PerMinute: 1000, Totals: []ratelimit.Total{
		{Window: "day:x", Limit: 10_000, Ends: time.Now().Add(time.Hour), Base: 0},
	}}
	ctx := context.Background()
	var allowed int
	for i := range 6 {
		d, err := []ratelimit.Budgets{a, b}[i%2].Take(ctx, "user", req)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d calls of 300 tokens allowed by two instances with 1,000 per minute, want 3", allowed)
	}
}

func TestBudgetFallback(t *testing.T) {
	p := mustProxy(t)
	client := p.client()
	dead := ratelimit.NewRedisBudgets(client, mustPrefix(t, mustRedis(t)))
	p.stop()
	req := ratelimit.BudgetRequest{Tokens: 10, PerMinute: 15}
	ctx := context.Background()
	logs := &logBuffer{}

	open := ratelimit.NewBudgetFallback(dead, ratelimit.NewMemoryBudgets(ratelimit.MemoryConfig{}), ratelimit.FallbackConfig{Logger: logs.logger()})
	if d, err := open.Take(ctx, "k", req); err != nil || !d.Allowed {
		t.Fatalf("fail-open first take = %+v, %v", d, err)
	}
	if d, err := open.Take(ctx, "k", req); err != nil || d.Allowed {
		t.Fatalf("fail-open second take = %+v, %v; want refused by the memory bucket", d, err)
	}

	if logs.count("redis unavailable") != 1 {
		t.Errorf("outage logged %d times, want once", logs.count("redis unavailable"))
	}

	closed := ratelimit.NewBudgetFallback(dead, nil, ratelimit.FallbackConfig{Logger: logs.logger()})
	if _, err := closed.Take(ctx, "k", req); err != ratelimit.ErrUnavailable {
		t.Fatalf("fail-closed take: %v, want ErrUnavailable", err)
	}
}
