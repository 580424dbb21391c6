package app

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/server"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/store/replica"
)

// readReplica connects to the read replica of DS_DATABASE_READ_URL, if any, starts watching it, and returns
// st sending it the reads that may be slightly stale, with what reports its state to the readiness probe;
// without a replica, st as it is and nil. Close stops the watch and closes the pool.
func (a *App) readReplica(ctx context.Context, primary *pgxpool.Pool, st *store.Store, tracer pgx.QueryTracer) (*store.Store, server.ReplicaChecker, error) {
	if a.cfg.DatabaseReadURL == "" {
		return st, nil, nil
	}
	pool, err := store.OpenReplica(ctx, a.cfg.DatabaseReadURL, tracer)
	if err != nil {
		return nil, nil, err
	}
	a.closers = append(a.closers, pool.Close)
	monitor := replica.New(primary, pool, replica.Config{MaxLag: a.cfg.DatabaseReadMaxLag, Logger: a.logger})
	watchCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		monitor.Run(watchCtx)
	}()
	a.closers = append(a.closers, func() { stop(); <-watched })
	reads := a.metrics.RegisterReplica(func() float64 { return monitor.Lag().Seconds() })
	return st.WithReplica(pool, monitor, func(p string) { reads.WithLabelValues(p).Inc() }), monitor, nil
}
