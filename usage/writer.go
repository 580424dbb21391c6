package usage

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// FlushInterval is how often the records that wait are written: a record reaches the database, and the
	// reports, within about this long of its call's end.
	FlushInterval = time.Second
	// BatchSize is how many waiting records are written without waiting for the interval.
	BatchSize = 1000
	// BufferSize is how many records may wait in the queue, and how many more the writer holds while the
	// database fails; beyond, records are dropped, counted and logged.
	BufferSize = 10_000
	// writeTimeout bounds each write of a batch, and the last one at shutdown.
	writeTimeout = 5 * time.Second
)

// Writer stores records in batches, off the request path: Record only queues a record, and the goroutine of
// Start writes what is queued every FlushInterval, at once when BatchSize records wait, and at shutdown.
// A batch that fails to be written is tried again at the next interval, with the records that came since.
// While the database is slow or down, at most 2×BufferSize records wait (BufferSize taken from the queue,
// BufferSize in it); later ones are dropped, counted and logged.
type Writer struct {
	store   Store
	logger  *slog.Logger
	queue   chan Record
	dropped atomic.Int64 // records dropped since the last log of them
}

// NewWriter returns a Writer into st; Start starts it.
func NewWriter(st Store, logger *slog.Logger) *Writer {
	return &Writer{store: st, logger: logger, queue: make(chan Record, BufferSize)}
}

// Record queues r to be written. It never blocks: when BufferSize records wait already, r is dropped.
func (w *Writer) Record(r Record) {
	// Text a model server sent, such as the name of the model that answered, may be anything; PostgreSQL
	// would refuse the whole batch for one NUL or invalid UTF-8 sequence.
	r.Model, r.Upstream, r.RequestID = storable(r.Model), storable(r.Upstream), storable(r.RequestID)
	select {
	case w.queue <- r:
	default:
		w.dropped.Add(1)
	}
}

// Start writes the queued records until ctx ends or stop is called; then it writes those still queued and
// returns from stop. Records given to Record after stop returned are not written.
func (w *Writer) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// run is the writer's loop. pending holds the records taken from the queue and not yet written; while it
// holds BufferSize of them (the database failing), the queue is not read, so that it fills and Record drops.
func (w *Writer) run(ctx context.Context) {
	tick := time.NewTicker(FlushInterval)
	defer tick.Stop()
	var pending []Record
	for {
		queue := w.queue
		if len(pending) >= BufferSize {
			queue = nil
		}
		select {
		case r := <-queue:
			// Exactly BatchSize: after a failed write, more wait, and the next tick tries again.
			if pending = append(pending, r); len(pending) == BatchSize {
				pending = w.write(ctx, pending)
			}
		case <-tick.C:
			pending = w.write(ctx, pending)
		case <-ctx.Done():
			for len(w.queue) > 0 { // only this goroutine reads the queue
				pending = append(pending, <-w.queue)
			}
			if rest := w.write(context.WithoutCancel(ctx), pending); len(rest) > 0 {
				w.logger.Error("usage records lost at shutdown: the database did not take them", "records", len(rest))
			}
			return
		}
	}
}

// write stores the pending records in one batch and returns those that remain pending: none, or all of
// them when the write failed. It logs the records dropped since it last did.
func (w *Writer) write(ctx context.Context, pending []Record) []Record {
	if n := w.dropped.Swap(0); n > 0 {
		w.logger.Warn("usage records dropped: too many waited for the database", "records", n, "buffer", BufferSize)
	}
	if len(pending) == 0 {
		return pending
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := w.store.InsertUsage(ctx, pending); err != nil {
		w.logger.Warn("usage records not stored; retrying with the next batch", "records", len(pending), "error", err)
		return pending
	}
	return pending[:0]
}

// storable makes s text that PostgreSQL stores: valid UTF-8 without NUL.
func storable(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}
