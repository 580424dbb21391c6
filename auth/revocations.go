package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

const (
	// revocationSlack lengthens every revocation beyond the lifetime of the tokens it covers, for the clock
	// skew between instances and for a token signed while its session was being ended.
	revocationSlack = time.Minute
	// revocationTick is how often expired revocations are dropped and Redis is retried after a failure.
	revocationTick = 10 * time.Second
	// redisWait bounds each write to and load from Redis.
	redisWait = time.Second
	// loadWait is how long Start waits for the first load from a Redis that answers.
	loadWait = 2 * time.Second
)

// RevocationsConfig configures Revocations.
type RevocationsConfig struct {
	// Redis, when not nil, shares the revocations with every instance on it.
	Redis *redis.Client
	// KeyPrefix starts the name of the Redis key and channel.
	KeyPrefix string
	// Lifetime is how long after it was issued an access token can still verify (Tokens.Lifetime).
	Lifetime time.Duration
	Logger   *slog.Logger
}

// Revocations is the list of ended sessions, revoked API keys and deleted accounts whose access tokens, or
// cached keys, may still verify. Each instance holds it in memory, so that checking a token is a map lookup
// and no I/O. With Redis the instances share it: a revocation is added to the sorted set
// KeyPrefix+"revoked" (member "s:<session id>", "k:<API key id>" or "u:<user id>", score the Unix
// milliseconds until which it holds) and published on the channel
// KeyPrefix+"revocations", to which every instance subscribes; the set is loaded whenever the subscription
// starts, at start-up and after each reconnection. A revocation holds until every token it covers has
// expired, then it is dropped.
type Revocations struct {
	lifetime     time.Duration
	logger       *slog.Logger
	redis        *redis.Client
	key, channel string
	now          func() time.Time

	mu      sync.RWMutex
	entries map[revocation]time.Time // until when each revocation holds
	// pending holds the revocations that Redis has not taken yet; they are written when it answers again.
	pending map[revocation]time.Time
	// stale means the set must be loaded again from Redis, since the last load failed or a subscription
	// (re)started.
	stale bool
}

// NewRevocations returns an empty list; Start loads and shares it.
func NewRevocations(cfg RevocationsConfig) *Revocations {
	return &Revocations{
		lifetime: cfg.Lifetime + revocationSlack, logger: cfg.Logger, redis: cfg.Redis,
		key: cfg.KeyPrefix + "revoked", channel: cfg.KeyPrefix + "revocations", now: time.Now,
		entries: make(map[revocation]time.Time), pending: make(map[revocation]time.Time),
	}
}

// revocation names what is revoked: one session (a refresh-token family), one API key, or every session and
// key of a user.
type revocation struct {
	kind byte // 's' for a session, 'k' for an API key, 'u' for a user
	id   uuid.UUID
}

// String is the revocation as Redis stores it: "s:<uuid>", "k:<uuid>" or "u:<uuid>".
func (rv revocation) String() string { return string(rv.kind) + ":" + rv.id.String() }

// parseRevocation reads a revocation written by String.
func parseRevocation(s string) (revocation, error) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || (kind != "s" && kind != "k" && kind != "u") {
		return revocation{}, fmt.Errorf("revocation %q is not s:<uuid>, k:<uuid> or u:<uuid>", s)
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return revocation{}, fmt.Errorf("revocation %q: %w", s, err)
	}
	return revocation{kind: kind[0], id: u}, nil
}

// RevokeSession ends the access tokens of a session at once, on every instance.
func (r *Revocations) RevokeSession(ctx context.Context, session uuid.UUID) {
	r.revoke(ctx, revocation{'s', session})
}

// RevokeAPIKey ends an API key at once, on every instance, however long the instances cache it (less than a
// revocation lasts).
func (r *Revocations) RevokeAPIKey(ctx context.Context, keyID uuid.UUID) {
	r.revoke(ctx, revocation{'k', keyID})
}

// RevokeUser ends every access token and API key of a user at once, on every instance.
func (r *Revocations) RevokeUser(ctx context.Context, userID uuid.UUID) {
	r.revoke(ctx, revocation{'u', userID})
}

// revoke applies a revocation on this instance and shares it through Redis. When Redis does not answer,
// the revocation stays pending and is shared once it does.
func (r *Revocations) revoke(ctx context.Context, rv revocation) {
	until := r.now().Add(r.lifetime)
	r.mu.Lock()
	r.add(rv, until)
	if r.redis != nil {
		r.pending[rv] = until
	}
	r.mu.Unlock()
	if r.redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisWait)
	defer cancel()
	if err := r.flush(ctx); err != nil {
		r.logger.WarnContext(ctx, "revocation applies on this instance only until Redis answers",
			"revocation", rv.String(), "error", err)
	}
}

// Revoked reports whether the session or the user of a verified token is revoked.
func (r *Revocations) Revoked(c Claims) bool {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.entries[revocation{'s', c.SessionID}].After(now) || r.entries[revocation{'u', c.UserID}].After(now)
}

// keyRevoked reports whether an API key or its user is revoked.
func (r *Revocations) keyRevoked(userID, keyID uuid.UUID) bool {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.entries[revocation{'k', keyID}].After(now) || r.entries[revocation{'u', userID}].After(now)
}

// add records a revocation until a time, keeping the later one when it is known already. r.mu is held.
func (r *Revocations) add(rv revocation, until time.Time) {
	if until.After(r.entries[rv]) {
		r.entries[rv] = until
	}
}

// Start loads the list from Redis, waiting for it at most loadWait, and then keeps it in step with the other
// instances and drops expired revocations, until stop is called. Without Redis it only drops expired ones.
func (r *Revocations) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	loaded, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx, loaded)
	}()
	if r.redis != nil {
		if err := r.redis.Ping(ctx).Err(); err != nil {
			r.logger.WarnContext(ctx, "Redis is unavailable: revocations made by other instances apply here once it answers", "error", err)
		} else {
			select {
			case <-loaded:
			case <-time.After(loadWait):
				r.logger.WarnContext(ctx, "revocations not loaded from Redis yet; they apply here once they are")
			}
		}
	}
	return func() {
		cancel()
		<-done
	}
}

// run keeps the list until ctx ends: it applies what the other instances publish, reloads the set each time
// the subscription starts, retries Redis after failures, and drops expired revocations. It closes loaded
// after the first complete load.
func (r *Revocations) run(ctx context.Context, loaded chan struct{}) {
	tick := time.NewTicker(revocationTick)
	defer tick.Stop()
	var messages <-chan any
	if r.redis != nil {
		sub := r.redis.Subscribe(ctx, r.channel)
		defer sub.Close()
		messages = sub.ChannelWithSubscriptions()
	}
	shared := true // whether the last exchange with Redis worked, to log changes only
	resync := func() {
		err := r.sync(ctx)
		switch {
		case err != nil && shared:
			r.logger.WarnContext(ctx, "revocations are not shared while Redis does not answer", "error", err)
		case err == nil && !shared:
			r.logger.InfoContext(ctx, "revocations are shared through Redis again")
		}
		shared = err == nil
		if err == nil && loaded != nil {
			close(loaded)
			loaded = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.prune()
			if r.redis != nil {
				resync()
			}
		case m := <-messages:
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" { // at start or after a reconnection: what was missed is in the set
					r.mu.Lock()
					r.stale = true
					r.mu.Unlock()
					resync()
				}
			case *redis.Message:
				r.apply(m.Payload)
			}
		}
	}
}

// sync writes the pending revocations to Redis and, when the list is stale, loads the set.
func (r *Revocations) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisWait)
	defer cancel()
	if err := r.flush(ctx); err != nil {
		return err
	}
	r.mu.RLock()
	stale := r.stale
	r.mu.RUnlock()
	if !stale {
		return nil
	}
	now := r.now()
	zs, err := r.redis.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
		Key: r.key, Start: "(" + strconv.FormatInt(now.UnixMilli(), 10), Stop: "+inf", ByScore: true,
	}).Result()
	if err != nil {
		return fmt.Errorf("load revocations from Redis: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, z := range zs {
		member, _ := z.Member.(string)
		rv, err := parseRevocation(member)
		if err != nil {
			r.logger.WarnContext(ctx, "ignoring a malformed revocation in Redis", "error", err)
			continue
		}
		r.add(rv, time.UnixMilli(int64(z.Score)))
	}
	r.stale = false
	return nil
}

// flush writes the pending revocations to Redis and publishes them to the other instances.
func (r *Revocations) flush(ctx context.Context) error {
	r.mu.RLock()
	batch := maps.Clone(r.pending)
	r.mu.RUnlock()
	if len(batch) == 0 {
		return nil
	}
	_, err := r.redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for rv, until := range batch {
			ms := until.UnixMilli()
			p.ZAddGT(ctx, r.key, redis.Z{Score: float64(ms), Member: rv.String()})
			p.Publish(ctx, r.channel, rv.String()+" "+strconv.FormatInt(ms, 10))
		}
		// A revocation that no longer holds is dropped; the key goes with the last one.
		p.ZRemRangeByScore(ctx, r.key, "-inf", strconv.FormatInt(r.now().UnixMilli(), 10))
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %d revocations to Redis: %w", len(batch), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for rv, until := range batch {
		if r.pending[rv].Equal(until) {
			delete(r.pending, rv)
		}
	}
	return nil
}

// apply records a revocation published by an instance: "<revocation> <until in Unix milliseconds>".
func (r *Revocations) apply(payload string) {
	member, ms, _ := strings.Cut(payload, " ")
	rv, err := parseRevocation(member)
	n, nerr := strconv.ParseInt(ms, 10, 64)
	if err = errors.Join(err, nerr); err != nil {
		r.logger.Warn("ignoring a malformed revocation message", "payload", payload, "error", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(rv, time.UnixMilli(n))
}

// prune drops the revocations that no longer hold.
func (r *Revocations) prune() {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range []map[revocation]time.Time{r.entries, r.pending} {
		maps.DeleteFunc(m, func(_ revocation, until time.Time) bool { return !until.After(now) })
	}
}
