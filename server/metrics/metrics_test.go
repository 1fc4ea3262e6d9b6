package metrics

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestRegistryGathersEveryName(t *testing.T) {
	m := New()
	// Vectors export nothing until a series exists.
	m.observeRPC("/catalogd.v1.KV/Get", codes.OK, 0)

	got := gather(t, m)
	want := []string{
		"catalogd_server_is_leader",
		"catalogd_server_has_leader",
		"catalogd_server_term",
		"catalogd_server_leader_changes_seen_total",
		"catalogd_server_proposals_committed_total",
		"catalogd_server_proposals_applied_total",
		"catalogd_server_proposals_failed_total",
		"catalogd_server_proposals_pending",
		"catalogd_server_apply_duration_seconds",
		"catalogd_disk_wal_fsync_duration_seconds",
		"catalogd_disk_backend_commit_duration_seconds",
		"catalogd_mvcc_db_total_size_in_bytes",
		"catalogd_mvcc_revision",
		"catalogd_server_applied_index",
		"catalogd_server_commit_index",
		"catalogd_server_read_index_duration_seconds",
		"catalogd_server_snapshots_saved_total",
		"catalogd_grpc_requests_total",
		"catalogd_grpc_request_duration_seconds",
		"go_goroutines",
		"process_start_time_seconds",
	}
	for _, name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("registry does not gather %s", name)
		}
	}
}

func TestTwoServersInOneProcess(t *testing.T) {
	a, b := New(), New()
	a.IsLeader.Set(1)
	if v := value(t, b.IsLeader); v != 0 {
		t.Fatalf("second Metrics sees is_leader %v set on the first; want separate registries", v)
	}
}

func TestUnaryServerInterceptor(t *testing.T) {
	const method = "/catalogd.v1.KV/Put"
	tests := []struct {
		name     string
		err      error
		wantCode string
	}{
		{"ok", nil, "OK"},
		{"status error", status.Error(codes.InvalidArgument, "key must be 1..4096 bytes, got 5000"), "InvalidArgument"},
		{"plain error", errors.New("boom"), "Unknown"},
		{"code outside the known range", status.Error(codes.Code(99), "odd"), "Code(99)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			intercept := m.UnaryServerInterceptor()
			info := &grpc.UnaryServerInfo{FullMethod: method}
			handler := func(ctx context.Context, req any) (any, error) {
				if tt.err != nil {
					return nil, tt.err
				}
				return "resp", nil
			}
			for range 3 {
				resp, err := intercept(t.Context(), "req", info, handler)
				if !errors.Is(err, tt.err) {
					t.Fatalf("interceptor returned error %v, want the handler's %v", err, tt.err)
				}
				if tt.err == nil && resp != "resp" {
					t.Fatalf("interceptor returned %v, want the handler's response", resp)
				}
			}
			if got := value(t, m.GRPCRequests.WithLabelValues(method, tt.wantCode)); got != 3 {
				t.Errorf("requests_total{method=%q, code=%q} = %v, want 3", method, tt.wantCode, got)
			}
			if n := len(gather(t, m)["catalogd_grpc_requests_total"].GetMetric()); n != 1 {
				t.Errorf("requests_total has %d series, want 1 (only the code returned)", n)
			}
			if got := histogramCount(t, m, "catalogd_grpc_request_duration_seconds", method); got != 3 {
				t.Errorf("request_duration_seconds{method=%q} count = %d, want 3", method, got)
			}
		})
	}
}

func TestStreamServerInterceptor(t *testing.T) {
	const method = "/catalogd.v1.Watch/Watch"
	m := New()
	intercept := m.StreamServerInterceptor()
	info := &grpc.StreamServerInfo{FullMethod: method, IsServerStream: true}
	cancelled := status.Error(codes.Canceled, "client went away")

	err := intercept(nil, fakeStream{ctx: t.Context()}, info, func(srv any, ss grpc.ServerStream) error {
		return cancelled
	})
	if !errors.Is(err, cancelled) {
		t.Fatalf("interceptor returned %v, want the handler's error", err)
	}
	if got := value(t, m.GRPCRequests.WithLabelValues(method, "Canceled")); got != 1 {
		t.Errorf("requests_total{code=Canceled} = %v, want 1", got)
	}
	if got := histogramCount(t, m, "catalogd_grpc_request_duration_seconds", method); got != 1 {
		t.Errorf("request_duration_seconds count = %d, want 1", got)
	}
}

func TestInterceptorConcurrentMethods(t *testing.T) {
	m := New()
	intercept := m.UnaryServerInterceptor()
	methods := []string{"/catalogd.v1.KV/Get", "/catalogd.v1.KV/Put", "/catalogd.v1.Cluster/Status"}
	const perGoroutine = 200
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			info := &grpc.UnaryServerInfo{FullMethod: methods[g%len(methods)]}
			for range perGoroutine {
				_, _ = intercept(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, nil })
			}
		})
	}
	wg.Wait()
	var total float64
	for _, method := range methods {
		total += value(t, m.GRPCRequests.WithLabelValues(method, "OK"))
	}
	if want := float64(8 * perGoroutine); total != want {
		t.Fatalf("requests_total summed over methods = %v, want %v", total, want)
	}
}

func BenchmarkUnaryServerInterceptor(b *testing.B) {
	m := New()
	intercept := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/catalogd.v1.KV/Get"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = intercept(ctx, nil, info, handler)
		}
	})
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context     { return s.ctx }
func (s fakeStream) SetHeader(metadata.MD) error  { return nil }
func (s fakeStream) SendHeader(metadata.MD) error { return nil }

// value reads a counter or gauge without the testutil package, which would
// pull another module into go.sum.
func value(t *testing.T, metric prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := metric.Write(&out); err != nil {
		t.Fatalf("read metric: %v", err)
	}
	switch {
	case out.Counter != nil:
		return out.GetCounter().GetValue()
	case out.Gauge != nil:
		return out.GetGauge().GetValue()
	}
	t.Fatalf("metric %v is neither a counter nor a gauge", metric.Desc())
	return 0
}

func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	return byName
}

// histogramCount returns the sample count of the histogram family name for the
// series whose method label is method.
func histogramCount(t *testing.T, m *Metrics, name, method string) uint64 {
	t.Helper()
	mf, ok := gather(t, m)[name]
	if !ok {
		t.Fatalf("registry does not gather %s", name)
	}
	for _, metric := range mf.GetMetric() {
		for _, l := range metric.GetLabel() {
			if l.GetName() == "method" && l.GetValue() == method {
				return metric.GetHistogram().GetSampleCount()
			}
		}
	}
	t.Fatalf("%s has no series with method=%q", name, method)
	return 0
}
