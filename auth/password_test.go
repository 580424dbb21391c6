package auth_test

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/auth"
)

var owasp = auth.Argon2Params{Memory: 19456, Time: 2, Parallelism: 1}

func TestHashAndVerify(t *testing.T) {
	h, err := auth.NewHasher(owasp, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	encoded, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	phc := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !phc.MatchString(encoded) {
		t.Fatalf("hash %q is not an argon2id PHC string with the OWASP parameters", encoded)
	}
	cheaper, err := auth.NewHasher(auth.Argon2Params{Memory: 1024, Time: 1, Parallelism: 1}, 1, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                  string
		hasher                *auth.Hasher
		password, encoded     string
		wantMatch, wantRehash bool
		wantErr               bool
	}{
		{"right password", h, "correct horse", encoded, true, false, false},
		{"wrong password", h, "correct horsf", encoded, false, false, false},
		{"parameters changed since", cheaper, "correct horse", encoded, true, true, false},
		{"not a PHC string", h, "x", "plain", false, false, true},
		{"another algorithm", h, "x", "$argon2i$v=19$m=1,t=1,p=1$c2FsdA$a2V5", false, false, true},
		{"bad parameters", h, "x", "$argon2id$v=19$m=x,t=1,p=1$c2FsdA$a2V5", false, false, true},
		{"bad salt", h, "x", "$argon2id$v=19$m=8,t=1,p=1$!!$a2V5", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			match, rehash, err := tt.hasher.Verify(ctx, tt.password, tt.encoded)
			if (err != nil) != tt.wantErr || match != tt.wantMatch || rehash != tt.wantRehash {
				t.Errorf("Verify = %v, %v, %v; want %v, %v, error %v", match, rehash, err, tt.wantMatch, tt.wantRehash, tt.wantErr)
			}
		})
	}
}

func TestHasherBusy(t *testing.T) {
	var waits atomic.Int64
	h, err := auth.NewHasher(owasp, 1, 20*time.Millisecond, func(time.Duration) { waits.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var busy atomic.Int64
	for range 8 {
		wg.Go(func() {
			if _, err := h.Hash(context.Background(), "password"); errors.Is(err, auth.ErrBusy) {
				busy.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if busy.Load() == 0 || busy.Load() == 8 {
		t.Errorf("%d of 8 hashes were refused as busy, want some but not all", busy.Load())
	}
	if waits.Load()+busy.Load() != 8+1 { // +1: the dummy hash made by NewHasher
		t.Errorf("wait observed %d times, want once per hash that got a slot", waits.Load())
	}
}

// TestHashingMemoryIsBounded hashes 32 passwords at once with the OWASP parameters (19 MiB each) and two
// slots: the heap must stay near two hashes' worth, far below the 600 MiB that 32 at once would take.
func TestHashingMemoryIsBounded(t *testing.T) {
	h, err := auth.NewHasher(owasp, 2, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := h.Hash(context.Background(), "password"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled

	const perHash = 19456 << 10
	grown := int64(peak.Load()) - int64(before.HeapAlloc)
	if limit := int64(8 * perHash); grown > limit {
		t.Errorf("heap grew by %d MiB while hashing, want under %d MiB", grown>>20, limit>>20)
	}
	t.Logf("heap grew by at most %d MiB for 32 concurrent hashes with 2 slots", grown>>20)
}
