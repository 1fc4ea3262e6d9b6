package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// latencyBuckets spans 100µs to about 3.3s: an fsync on a good disk, a
// ReadIndex round inside one data center and a slow batch all land inside it.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16)

// A Metrics holds one server's Prometheus collectors, registered on its own
// Registry. The zero value is not usable; call New.
type Metrics struct {
	Registry *prometheus.Registry

	// IsLeader is 1 on the leader and 0 elsewhere.
	IsLeader prometheus.Gauge
	// HasLeader is 1 while this server knows a leader.
	HasLeader     prometheus.Gauge
	Term          prometheus.Gauge
	LeaderChanges prometheus.Counter

	ProposalsCommitted prometheus.Counter
	ProposalsApplied   prometheus.Counter
	ProposalsFailed    prometheus.Counter
	ProposalsPending   prometheus.Gauge
	// ApplyDuration times the apply of one batch of committed entries (one
	// bbolt write transaction).
	ApplyDuration prometheus.Histogram

	WALFsyncDuration      prometheus.Histogram
	BackendCommitDuration prometheus.Histogram

	DBSize       prometheus.Gauge
	Revision     prometheus.Gauge
	AppliedIndex prometheus.Gauge
	CommitIndex  prometheus.Gauge

	ReadIndexDuration prometheus.Histogram
	SnapshotsSaved    prometheus.Counter

	// GRPCRequests counts finished RPCs by method (the full method name) and
	// code (the gRPC status code name, "OK" on success).
	GRPCRequests *prometheus.CounterVec
	// GRPCLatency times unary RPCs, and the whole life of streaming ones.
	GRPCLatency *prometheus.HistogramVec

	// rpcs caches, per full method name, the series the interceptors update,
	// so the hot path does no label lookup.
	rpcs rpcCache
}

// New creates a Metrics with a fresh Registry holding every catalogd
// collector plus the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),

		IsLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_is_leader",
			Help: "1 if this server is the raft leader, 0 otherwise.",
		}),
		HasLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_has_leader",
			Help: "1 if this server knows a raft leader, 0 otherwise.",
		}),
		Term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_term",
			Help: "The raft term this server is in.",
		}),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "catalogd_server_leader_changes_seen_total",
			Help: "Leader changes this server has seen.",
		}),
		ProposalsCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "catalogd_server_proposals_committed_total",
			Help: "Raft entries this server has seen committed.",
		}),
		ProposalsApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "catalogd_server_proposals_applied_total",
			Help: "Raft entries this server has applied.",
		}),
		ProposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "catalogd_server_proposals_failed_total",
			Help: "Proposals from this server that failed or timed out before a result.",
		}),
		ProposalsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_proposals_pending",
			Help: "Proposals from this server waiting for their result.",
		}),
		ApplyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalogd_server_apply_duration_seconds",
			Help:    "Time to apply one batch of committed entries.",
			Buckets: latencyBuckets,
		}),
		WALFsyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalogd_disk_wal_fsync_duration_seconds",
			Help:    "Time of one WAL fsync.",
			Buckets: latencyBuckets,
		}),
		BackendCommitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalogd_disk_backend_commit_duration_seconds",
			Help:    "Time of one bbolt commit.",
			Buckets: latencyBuckets,
		}),
		DBSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_mvcc_db_total_size_in_bytes",
			Help: "Size of the state machine database file, in bytes.",
		}),
		Revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_mvcc_revision",
			Help: "The store revision this server has applied.",
		}),
		AppliedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_applied_index",
			Help: "The last raft index this server has applied.",
		}),
		CommitIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "catalogd_server_commit_index",
			Help: "The last raft index this server knows to be committed.",
		}),
		ReadIndexDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalogd_server_read_index_duration_seconds",
			Help:    "Time of one ReadIndex round (shared by the linearizable reads batched into it).",
			Buckets: latencyBuckets,
		}),
		SnapshotsSaved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "catalogd_server_snapshots_saved_total",
			Help: "Raft snapshots this server has saved.",
		}),
		GRPCRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "catalogd_grpc_requests_total",
			Help: "Finished gRPC requests by full method name and status code.",
		}, []string{"method", "code"}),
		GRPCLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "catalogd_grpc_request_duration_seconds",
			Help:    "Duration of gRPC requests by full method name (for a stream, its whole life).",
			Buckets: latencyBuckets,
		}, []string{"method"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.IsLeader, m.HasLeader, m.Term, m.LeaderChanges,
		m.ProposalsCommitted, m.ProposalsApplied, m.ProposalsFailed, m.ProposalsPending,
		m.ApplyDuration, m.WALFsyncDuration, m.BackendCommitDuration,
		m.DBSize, m.Revision, m.AppliedIndex, m.CommitIndex,
		m.ReadIndexDuration, m.SnapshotsSaved,
		m.GRPCRequests, m.GRPCLatency,
	)
	return m
}
