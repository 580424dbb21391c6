package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

func TestSemaphore(t *testing.T) {
	ctx := context.Background()
	s := ratelimit.NewSemaphore(2, 0)
	first, ok1, _ := s.Acquire(ctx)
	_, ok2, _ := s.Acquire(ctx)
	if !ok1 || !ok2 {
		t.Fatal("two slots of two were not granted")
	}
	start := time.Now()
	if _, ok, err := s.Acquire(ctx); ok || err != nil {
		t.Fatalf("third Acquire without a wait = %v, %v; want refused", ok, err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("a semaphore without a wait refused after %v, want at once", d)
	}
	first()
	if _, ok, _ := s.Acquire(ctx); !ok {
		t.Error("a released slot was not granted again")
	}
}

func TestSemaphoreWait(t *testing.T) {
	ctx := context.Background()
	s := ratelimit.NewSemaphore(1, 200*time.Millisecond)
	release, _, _ := s.Acquire(ctx)

	// A slot freed within the wait goes to the waiter.
	time.AfterFunc(50*time.Millisecond, release)
	again, ok, err := s.Acquire(ctx)
	if !ok || err != nil {
		t.Fatalf("Acquire while a slot frees up = %v, %v; want granted", ok, err)
	}

	// Nothing freed within the wait: refused after it.
	start := time.Now()
	if _, ok, err := s.Acquire(ctx); ok || err != nil {
		t.Fatalf("Acquire of a full semaphore = %v, %v; want refused", ok, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("refused after %v, want after the 200ms wait", d)
	}

	// The caller giving up ends the wait with its error.
	cancelled, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, ok, err := s.Acquire(cancelled); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context = %v, %v; want context.Canceled", ok, err)
	}
	again()
}

func TestAddressKey(t *testing.T) {
	tests := []struct {
		ip     string
		prefix int
		want   string
	}{
		{"198.51.100.7", 64, "198.51.100.7"},
		{"::ffff:198.51.100.7", 64, "198.51.100.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", 64, "2001:db8:1:3::/64"},
		{"2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"},
		{"2001:db8::1", 128, "2001:db8::1/128"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"not an address", 64, "not an address"},
	}
	for _, tt := range tests {
		if got := ratelimit.AddressKey(tt.ip, tt.prefix); got != tt.want {
			t.Errorf("AddressKey(%q, %d) = %q, want %q", tt.ip, tt.prefix, got, tt.want)
		}
	}
}
