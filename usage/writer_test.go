package usage_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/usage"
)

// fakeStore keeps the batches it is given. The first failures calls of InsertUsage fail; while release is
// set, each call waits for it.
type fakeStore struct {
	mu       sync.Mutex
	batches  [][]usage.Record
	failures int
	release  chan struct{}
	inserted chan int // the size of each batch stored, when set
	queries  []usage.Query
	totals   []usage.Total
}

func (f *fakeStore) InsertUsage(ctx context.Context, records []usage.Record) error {
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return errors.New("the database is down")
	}
	f.batches = append(f.batches, append([]usage.Record(nil), records...))
	if f.inserted != nil {
		f.inserted <- len(records)
	}
	return nil
}

func (f *fakeStore) UsageTotals(_ context.Context, q usage.Query) ([]usage.Total, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return f.totals, nil
}

// stored returns how many records were stored.
func (f *fakeStore) stored() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range f.batches {
		n += len(b)
	}
	return n
}

// startWriter starts a Writer into st, which stops when the test ends, and returns it with its logs.
func startWriter(t *testing.T, st *fakeStore) (w *usage.Writer, stop func(), logs *testapp.SyncBuffer) {
	logs = &testapp.SyncBuffer{}
	w = usage.NewWriter(st, slog.New(slog.NewTextHandler(logs, nil)))
	stop = w.Start(context.Background())
	t.Cleanup(stop)
	return w, stop, logs
}

func record(i int) usage.Record {
	return usage.Record{UserID: uuid.New(), Model: "tiny:latest", Outcome: usage.Complete, CompletionTokens: i, CreatedAt: time.Now()}
}

// waitBatch waits for the next batch stored and returns its size.
func waitBatch(t *testing.T, st *fakeStore, within time.Duration) int {
	t.Helper()
	select {
	case n := <-st.inserted:
		return n
	case <-time.After(within):
		t.Fatalf("no batch stored within %v", within)
		return 0
	}
}

// TestWriterFlushesEverySecond checks that a lone record is stored at the next tick, not when it is recorded.
func TestWriterFlushesEverySecond(t *testing.T) {
	st := &fakeStore{inserted: make(chan int, 10)}
	w, _, _ := startWriter(t, st)
	start := time.Now()
	w.Record(record(1))
	if n := waitBatch(t, st, usage.FlushInterval+time.Second); n != 1 {
		t.Errorf("batch of %d records, want 1", n)
	}
	if waited := time.Since(start); waited < usage.FlushInterval/2 {
		t.Errorf("stored after %v: it should wait for the interval", waited)
	}
}

// TestWriterFlushesFullBatches checks that BatchSize records are stored at once, without waiting for the tick.
func TestWriterFlushesFullBatches(t *testing.T) {
	st := &fakeStore{inserted: make(chan int, 10)}
	w, _, _ := startWriter(t, st)
	start := time.Now()
	for i := range usage.BatchSize {
		w.Record(record(i))
	}
	if n := waitBatch(t, st, usage.FlushInterval); n != usage.BatchSize {
		t.Errorf("first batch of %d records, want %d", n, usage.BatchSize)
	}
	if waited := time.Since(start); waited >= usage.FlushInterval {
		t.Errorf("a full batch waited %v for the tick", waited)
	}
}

// TestWriterFlushesAtShutdown checks that stop writes the records still queued before it returns.
func TestWriterFlushesAtShutdown(t *testing.T) {
	st := &fakeStore{}
	w, stop, _ := startWriter(t, st)
	for i := range 3 {
		w.Record(record(i))
	}
	stop()
	if n := st.stored(); n != 3 {
		t.Errorf("%d records stored at shutdown, want 3", n)
	}
}

// TestRecordNeverWaitsForTheDatabase records while the database hangs: Record returns at once, and what the
// buffer cannot hold is dropped, counted and logged.
func TestRecordNeverWaitsForTheDatabase(t *testing.T) {
	st := &fakeStore{release: make(chan struct{})}
	w, stop, logs := startWriter(t, st)
	start := time.Now()
	const extra = 5
	// The writer hangs on the database with its first batch (BatchSize records, or fewer if the interval
	// ended first); BufferSize more fill the queue, and the rest are dropped.
	for i := range usage.BatchSize + usage.BufferSize + extra {
		w.Record(record(i))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("recording took %v with the database hanging", took)
	}
	close(st.release)
	stop()
	if n := st.stored(); n <= usage.BufferSize || n > usage.BatchSize+usage.BufferSize {
		t.Errorf("%d records stored, want at most %d and more than %d", n, usage.BatchSize+usage.BufferSize, usage.BufferSize)
	}
	if !strings.Contains(logs.String(), "usage records dropped") {
		t.Errorf("the dropped records were not logged:\n%s", logs.String())
	}
}

// TestWriterRetriesAFailedBatch checks that records whose write failed are written with the next batch.
func TestWriterRetriesAFailedBatch(t *testing.T) {
	st := &fakeStore{failures: 1, inserted: make(chan int, 10)}
	w, _, logs := startWriter(t, st)
	w.Record(record(1))
	if n := waitBatch(t, st, 2*usage.FlushInterval+time.Second); n != 1 {
		t.Errorf("batch of %d records, want 1", n)
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}
}

// TestRecordKeepsTextStorable checks that text a model server sent cannot make PostgreSQL refuse a batch.
func TestRecordKeepsTextStorable(t *testing.T) {
	st := &fakeStore{inserted: make(chan int, 10)}
	w, _, _ := startWriter(t, st)
	r := record(1)
	r.Model, r.Upstream = "bad\x00model\xff", "gpu\x00"
	w.Record(r)
	waitBatch(t, st, usage.FlushInterval+time.Second)
	st.mu.Lock()
	defer st.mu.Unlock()
	if got := st.batches[0][0]; got.Model != "badmodel\uFFFD" || got.Upstream != "gpu" {
		t.Errorf("stored model %q upstream %q, want them without NUL and valid UTF-8", got.Model, got.Upstream)
	}
}
