package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor returns an interceptor that counts every unary RPC by
// method and status code and observes its duration.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observeRPC(info.FullMethod, status.Code(err), time.Since(start))
		return resp, err
	}
}

// StreamServerInterceptor returns an interceptor that counts every streaming
// RPC by method and final status code when it ends, and observes how long it
// lived.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observeRPC(info.FullMethod, status.Code(err), time.Since(start))
		return err
	}
}

func (m *Metrics) observeRPC(method string, code codes.Code, d time.Duration) {
	s := m.rpcs.series(m, method)
	s.latency.Observe(d.Seconds())
	s.counter(m, code).Inc()
}

// knownCodes is the number of status codes gRPC defines (OK .. Unauthenticated).
const knownCodes = int(codes.Unauthenticated) + 1

// rpcSeries holds the series of one method. Counters per code are created on
// first use, so a method only exports the codes it has returned.
type rpcSeries struct {
	method  string
	latency prometheus.Observer
	byCode  [knownCodes]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

func (s *rpcSeries) counter(m *Metrics, code codes.Code) prometheus.Counter {
	if int(code) >= knownCodes {
		// A handler may build a status with any uint32; such codes are rare
		// enough to take the label lookup every time.
		return m.GRPCRequests.WithLabelValues(s.method, code.String())
	}
	slot := &s.byCode[code]
	if ref := slot.Load(); ref != nil {
		return ref.c
	}
	// Racing callers get the same child from the vector, so whichever Store
	// wins, every increment lands on the one series.
	ref := &counterRef{c: m.GRPCRequests.WithLabelValues(s.method, code.String())}
	slot.Store(ref)
	return ref.c
}

// rpcCache maps a full method name to its *rpcSeries.
type rpcCache struct{ byMethod sync.Map }

func (c *rpcCache) series(m *Metrics, method string) *rpcSeries {
	if s, ok := c.byMethod.Load(method); ok {
		return s.(*rpcSeries)
	}
	s, _ := c.byMethod.LoadOrStore(method, &rpcSeries{
		method:  method,
		latency: m.GRPCLatency.WithLabelValues(method),
	})
	return s.(*rpcSeries)
}

// ObserveCall counts one call carried inside a stream (Lock.Stream's Lock
// and Unlock) as the unary call method would be counted.
func (m *Metrics) ObserveCall(method string, err error, d time.Duration) {
	m.observeRPC(method, status.Code(err), d)
}
