package auth

import "time"

// SetRevocationsClock makes r read the time from now, for tests of expiry; call it before r is used.
func SetRevocationsClock(r *Revocations, now func() time.Time) { r.now = now }
