package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/server/metrics"
)

// A Backend is what the HTTP surface needs from a server.
type Backend interface {
	// Status answers as the Cluster.Status RPC does.
	Status(ctx context.Context) (*catalogpb.StatusResponse, error)
	// Get answers as the KV.Get RPC does: linearizable unless req.Consistency
	// is SERIALIZABLE.
	Get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error)
	// ListServices, GetService, GetInstance and GetShardMap answer as the
	// Registry RPCs of the same names do, errors as gRPC statuses.
	ListServices(ctx context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error)
	GetService(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error)
	GetInstance(ctx context.Context, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error)
	GetShardMap(ctx context.Context, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error)
	// LeaseList answers as the Lease.List RPC does.
	LeaseList(ctx context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error)
	// ListLocks, GetLock, ListBarriers, ListQueues and QueueStatus answer as
	// the Lock.List, Lock.Get, Barrier.List, Queue.List and Queue.Status
	// RPCs do.
	ListLocks(ctx context.Context, req *catalogpb.ListLocksRequest) (*catalogpb.ListLocksResponse, error)
	GetLock(ctx context.Context, req *catalogpb.GetLockRequest) (*catalogpb.GetLockResponse, error)
	ListBarriers(ctx context.Context, req *catalogpb.ListBarriersRequest) (*catalogpb.ListBarriersResponse, error)
	ListQueues(ctx context.Context, req *catalogpb.ListQueuesRequest) (*catalogpb.ListQueuesResponse, error)
	QueueStatus(ctx context.Context, req *catalogpb.QueueStatusRequest) (*catalogpb.QueueStatusResponse, error)
	// Ready reports whether the server is ready: a leader is known and it has
	// applied up to the commit index it last heard. reason says why not.
	Ready() (ok bool, reason string)
}

// A Config holds what New needs. Backend and Metrics are required.
type Config struct {
	Backend Backend
	Metrics *metrics.Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// maxBodyBytes bounds a request body: a GraphQL query is text a person or a
// client library wrote, and a megabyte is far past any real one.
const maxBodyBytes = 1 << 20

// New returns the handler serving every route of the package doc.
func New(cfg Config) (http.Handler, error) {
	if cfg.Backend == nil {
		return nil, errors.New("httpapi: Config.Backend is nil; the handler needs a server to read from")
	}
	if cfg.Metrics == nil {
		return nil, errors.New("httpapi: Config.Metrics is nil; pass the server's metrics.New()")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	schema, err := Schema(cfg.Backend)
	if err != nil {
		return nil, fmt.Errorf("httpapi: build graphql schema: %w", err)
	}
	gql := &graphqlHandler{schema: schema, logger: logger}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, reason := cfg.Backend.Ready(); !ok {
			if reason == "" {
				reason = "not ready"
			}
			writeText(w, http.StatusServiceUnavailable, reason)
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	reg := cfg.Metrics.Registry
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: promLogger{logger},
		// A collector failing should cost its own series, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})))
	mux.Handle("POST /graphql", gql)
	mux.Handle("GET /graphql", gql)
	return mux, nil
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// Probes must see the answer of now, never a cached one.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// promLogger adapts slog to promhttp's Println logger.
type promLogger struct{ logger *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.logger.Error("serve metrics", "err", fmt.Sprint(v...))
}
