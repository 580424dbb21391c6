package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a rate-limit policy written as LIMIT/PERIOD, such as 10/1m: LIMIT requests at once, refilled
// completely over PERIOD.
type Rate struct {
	Limit  int
	Period time.Duration
}

// Decode implements envconfig.Decoder.
func (r *Rate) Decode(value string) error {
	limit, period, ok := strings.Cut(value, "/")
	n, err := strconv.Atoi(strings.TrimSpace(limit))
	if !ok || err != nil || n < 1 {
		return fmt.Errorf("%q is not LIMIT/PERIOD such as 10/1m", value)
	}
	d, err := time.ParseDuration(strings.TrimSpace(period))
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not LIMIT/PERIOD such as 10/1m", value)
	}
	if d/time.Duration(n) < time.Microsecond {
		return fmt.Errorf("%q refills faster than one request per microsecond", value)
	}
	r.Limit, r.Period = n, d
	return nil
}

// String writes the rate back as LIMIT/PERIOD.
func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Limit, r.Period) }
