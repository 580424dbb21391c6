package metrics

import "github.com/prometheus/client_golang/prometheus"

// RegisterReplica adds the metrics of a read replica: deepersensor_db_replica_lag_seconds, which lag gives at
// scrape time, and deepersensor_db_reads_total, returned, for the reads that may go to it, by the pool that
// served them ("primary" or "replica").
func (m *Metrics) RegisterReplica(lag func() float64) *prometheus.CounterVec {
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "db_reads_total",
		Help: "Reads that the read replica may serve, by the pool that served them (primary or replica)."}, []string{"pool"})
	m.Registry.MustRegister(reads, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "db_replica_lag_seconds",
		Help: "How long the oldest write-ahead log the read replica has not replayed has been flushed on the primary."}, lag))
	for _, pool := range []string{"primary", "replica"} {
		reads.WithLabelValues(pool)
	}
	return reads
}
