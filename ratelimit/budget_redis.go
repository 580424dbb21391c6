package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// budgetScript is MemoryBudgets.Take and Adjust in Lua: one atomic round trip for the bucket and every total
// of a call, so that instances sharing the Redis share the budgets. The bucket runs on the Redis clock in
// microseconds, like allowScript; totals expire at their window's end (plus a grace) on the caller's clock.
//
// KEYS[1] is the bucket, KEYS[2..] the totals. ARGV: mode ("take" or "adjust"), tokens (taken, or for
// adjust the totals' correction), the bucket's microseconds per token (0 for no bucket), its capacity in
// tokens (for adjust, the bucket's correction in tokens), then per total: limit, base (-1 when unknown) and
// expiry in Unix milliseconds, which is at least a minute away on the Redis clock.
// Take returns {status, refused, retry after µs, used...} with status 1 taken, 0 refused (refused: 0 the
// bucket, i the i-th total) and 2 missing; Adjust returns {1}.
var budgetScript = redis.NewScript(`
local take = ARGV[1] == 'take'
local tokens = tonumber(ARGV[2])
local per_token = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local n = #KEYS - 1
local function now_us()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
if not take then
	for i = 1, n do
		if redis.call('EXISTS', KEYS[i + 1]) == 1 then
			redis.call('INCRBY', KEYS[i + 1], tokens)
		end
	end
	local tat = tonumber(redis.call('GET', KEYS[1]))
	if per_token > 0 and tat then
		local now = now_us()
		tat = math.max(tat + capacity * per_token, now)
		redis.call('SET', KEYS[1], string.format('%d', math.ceil(tat)), 'PX', string.format('%d', math.ceil((tat - now) / 1000) + 1))
	end
	return {1}
end
local used = {}
for i = 1, n do
	local v = redis.call('GET', KEYS[i + 1])
	if v then
		used[i] = tonumber(v)
	else
		used[i] = tonumber(ARGV[3 + 3 * i])
		if used[i] < 0 then
			return {2}
		end
	end
end
local function reply(status, refused, retry)
	local r = {status, refused, retry}
	for i = 1, n do
		r[3 + i] = used[i]
	end
	return r
end
for i = 1, n do
	local limit = tonumber(ARGV[2 + 3 * i])
	if limit > 0 and used[i] + tokens > limit then
		return reply(0, i, 0)
	end
end
if per_token > 0 then
	local now = now_us()
	local tat = tonumber(redis.call('GET', KEYS[1])) or now
	tat = math.max(tat, now) + math.min(tokens, capacity) * per_token
	local wait = tat - now - 60000000
	if wait > 0 then
		return reply(0, 0, math.ceil(wait))
	end
	redis.call('SET', KEYS[1], string.format('%d', math.ceil(tat)), 'PX', string.format('%d', math.ceil((tat - now) / 1000) + 1))
end
local soonest = math.floor(now_us() / 1000) + 60000
for i = 1, n do
	used[i] = used[i] + tokens
	redis.call('SET', KEYS[i + 1], string.format('%d', used[i]), 'PXAT', string.format('%d', math.max(tonumber(ARGV[4 + 3 * i]), soonest)))
end
return reply(1, 0, 0)
`)

// RedisBudgets are Budgets in Redis, shared by every instance: key's bucket is prefix+key+":minute" and
// each total prefix+key+":"+window, such as "ds:budget:42:day:2026-11-29".
type RedisBudgets struct {
	client redis.UniversalClient
	prefix string
}

var _ Budgets = (*RedisBudgets)(nil)

// NewRedisBudgets returns budgets kept in client under prefix.
func NewRedisBudgets(client redis.UniversalClient, prefix string) *RedisBudgets {
	return &RedisBudgets{client: client, prefix: prefix}
}

// Take takes r.Tokens from every budget of key when each has room for them, in one EVALSHA round trip.
func (b *RedisBudgets) Take(ctx context.Context, key string, r BudgetRequest) (BudgetDecision, error) {
	keys, args := b.script("take", key, r)
	res, err := budgetScript.Run(ctx, b.client, keys, args...).Int64Slice()
	if err != nil {
		return BudgetDecision{}, fmt.Errorf("ratelimit: redis budgets of %q: %w", key, err)
	}
	switch {
	case len(res) == 1 && res[0] == 2:
		return BudgetDecision{Missing: true}, nil
	case len(res) != 3+len(r.Totals):
		return BudgetDecision{}, fmt.Errorf("ratelimit: redis budgets of %q: unexpected reply %v", key, res)
	}
	return BudgetDecision{
		Allowed: res[0] == 1, Refused: int(res[1]) - 1, RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Used: res[3:],
	}, nil
}

// Adjust replaces a Take of r with used tokens, in one EVALSHA round trip.
func (b *RedisBudgets) Adjust(ctx context.Context, key string, r BudgetRequest, used int64) error {
	keys, args := b.script("adjust", key, r)
	args[1] = used - r.Tokens
	if r.PerMinute > 0 {
		args[3] = min(used, r.PerMinute) - min(r.Tokens, r.PerMinute)
	}
	if err := budgetScript.Run(ctx, b.client, keys, args...).Err(); err != nil {
		return fmt.Errorf("ratelimit: redis adjust budgets of %q: %w", key, err)
	}
	return nil
}

// script returns the keys and arguments of budgetScript for mode.
func (b *RedisBudgets) script(mode, key string, r BudgetRequest) ([]string, []any) {
	keys := make([]string, 0, 1+len(r.Totals))
	keys = append(keys, b.prefix+key+":minute")
	perToken := 0.0
	if r.PerMinute > 0 {
		perToken = float64(minuteWindow.Microseconds()) / float64(r.PerMinute)
	}
	args := make([]any, 0, 4+3*len(r.Totals))
	args = append(args, mode, r.Tokens, perToken, r.PerMinute)
	for _, t := range r.Totals {
		keys = append(keys, b.prefix+key+":"+t.Window)
		args = append(args, t.Limit, t.Base, t.Ends.Add(totalGrace).UnixMilli())
	}
	return keys, args
}
