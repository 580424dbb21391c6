package auth

import (
	"context"
	"time"
)

// SetRevocationsClock makes r read the time from now, for tests of expiry; call it before r is used.
func SetRevocationsClock(r *Revocations, now func() time.Time) { r.now = now }

// SetClock makes s read the time from now, for tests of API key expiry and use; call it before s is used.
func SetClock(s *Service, now func() time.Time) { s.now = now }

// FlushKeyUses writes the pending uses of API keys, as the service's background work does.
func FlushKeyUses(s *Service) { s.flushKeyUses(context.Background()) }

// SetTokensClock makes t read the time from now, for tests of expiry; call it before t is used.
func SetTokensClock(t *Tokens, now func() time.Time) { t.now = now }
