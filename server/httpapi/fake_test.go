package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/server/metrics"
)

// fakeBackend serves a fixed status and a sorted set of keys, and records
// what it was asked.
type fakeBackend struct {
	status    *catalogpb.StatusResponse
	statusErr error
	kvs       []*catalogpb.KeyValue // sorted by key
	getErr    error
	ready     bool
	reason    string

	// The registry: services by name, their instances (sorted by id) and
	// shard maps; leases sorted by id. registryErr, if set, fails every
	// registry and lease call.
	services    map[string]*catalogpb.Service
	instances   map[string][]*catalogpb.Instance
	shardMaps   map[string]*catalogpb.ShardMap
	leases      []*catalogpb.LeaseStatus
	registryErr error

	mu          sync.Mutex
	statusCalls int
	gets        []*catalogpb.GetRequest
	calls       []proto.Message // registry and lease requests, in order
}

const fakeRevision = 42

func (f *fakeBackend) Status(ctx context.Context) (*catalogpb.StatusResponse, error) {
	f.mu.Lock()
	f.statusCalls++
	f.mu.Unlock()
	return f.status, f.statusErr
}

// Get pages by key: a continue token is the key to start at.
func (f *fakeBackend) Get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	f.mu.Lock()
	f.gets = append(f.gets, req)
	f.mu.Unlock()
	if f.getErr != nil {
		return nil, f.getErr
	}
	resp := &catalogpb.GetResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}}
	var matched []*catalogpb.KeyValue
	for _, kv := range f.kvs {
		if req.Prefix && bytes.HasPrefix(kv.Key, req.Key) || !req.Prefix && bytes.Equal(kv.Key, req.Key) {
			matched = append(matched, kv)
		}
	}
	resp.Count = int64(len(matched))
	for _, kv := range matched {
		if len(req.ContinueToken) > 0 && bytes.Compare(kv.Key, req.ContinueToken) < 0 {
			continue
		}
		if req.Limit > 0 && int64(len(resp.Kvs)) == req.Limit {
			resp.More = true
			resp.NextToken = kv.Key
			break
		}
		out := &catalogpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
		if !req.KeysOnly {
			out.Value = kv.Value
		}
		resp.Kvs = append(resp.Kvs, out)
	}
	return resp, nil
}

func (f *fakeBackend) Ready() (bool, string) { return f.ready, f.reason }

func (f *fakeBackend) record(req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	return f.registryErr
}

func (f *fakeBackend) recordedCalls() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func serviceNotFound(name string) error {
	st, _ := status.New(codes.NotFound, fmt.Sprintf("registry: service not found: %q", name)).WithDetails(&errdetails.ErrorInfo{
		Domain: "catalogd", Reason: catalogpb.ErrorReason_SERVICE_NOT_FOUND.String(),
	})
	return st.Err()
}

func (f *fakeBackend) ListServices(ctx context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	resp := &catalogpb.ListServicesResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}}
	for _, name := range slices.Sorted(maps.Keys(f.services)) {
		svc := f.services[name]
		if name <= req.After || req.Tag != "" && !slices.Contains(svc.Tags, req.Tag) {
			continue
		}
		if req.Limit > 0 && int64(len(resp.Services)) == req.Limit {
			resp.More = true
			break
		}
		sum := &catalogpb.ServiceSummary{Service: svc}
		for _, inst := range f.instances[name] {
			sum.Instances++
			switch inst.Health {
			case catalogpb.HealthStatus_PASSING:
				sum.Passing++
			case catalogpb.HealthStatus_WARNING:
				sum.Warning++
			case catalogpb.HealthStatus_CRITICAL:
				sum.Critical++
			}
			if inst.State == catalogpb.InstanceState_STATE_SERVING {
				sum.Serving++
			}
		}
		resp.Services = append(resp.Services, sum)
	}
	return resp, nil
}

// matches is the filter as the server applies it, for the fake's answers.
func matches(f *catalogpb.InstanceFilter, inst *catalogpb.Instance) bool {
	if f == nil {
		return true
	}
	if f.Healthy && (inst.Health != catalogpb.HealthStatus_PASSING && inst.Health != catalogpb.HealthStatus_WARNING || inst.State != catalogpb.InstanceState_STATE_SERVING) {
		return false
	}
	if len(f.Health) > 0 && !slices.Contains(f.Health, inst.Health) || len(f.State) > 0 && !slices.Contains(f.State, inst.State) {
		return false
	}
	for _, tag := range f.Tags {
		if !slices.Contains(inst.Tags, tag) {
			return false
		}
	}
	return f.Zone == "" || f.Zone == inst.Zone
}

func (f *fakeBackend) GetService(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	svc, ok := f.services[req.Name]
	if !ok {
		return nil, serviceNotFound(req.Name)
	}
	resp := &catalogpb.GetServiceResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Service: svc}
	for _, inst := range f.instances[req.Name] {
		if !matches(req.Filter, inst) {
			continue
		}
		resp.Count++
		if inst.Id <= req.After {
			continue
		}
		if req.Limit > 0 && int64(len(resp.Instances)) == req.Limit {
			resp.More = true
			continue
		}
		resp.Instances = append(resp.Instances, inst)
	}
	return resp, nil
}

func (f *fakeBackend) GetInstance(ctx context.Context, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	if _, ok := f.services[req.Service]; !ok {
		return nil, serviceNotFound(req.Service)
	}
	for _, inst := range f.instances[req.Service] {
		if inst.Id == req.Id {
			return &catalogpb.GetInstanceResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Instance: inst}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "registry: instance not found: %s/%s", req.Service, req.Id)
}

func (f *fakeBackend) GetShardMap(ctx context.Context, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	if _, ok := f.services[req.Service]; !ok {
		return nil, serviceNotFound(req.Service)
	}
	m := f.shardMaps[req.Service]
	if m == nil {
		m = &catalogpb.ShardMap{Service: req.Service}
	}
	return &catalogpb.GetShardMapResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Map: m}, nil
}

func (f *fakeBackend) LeaseList(ctx context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	resp := &catalogpb.LeaseListResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Count: int64(len(f.leases))}
	for _, l := range f.leases {
		if l.Id <= req.After {
			continue
		}
		if req.Limit > 0 && int64(len(resp.Leases)) == req.Limit {
			resp.More = true
			break
		}
		resp.Leases = append(resp.Leases, l)
	}
	return resp, nil
}

// healthChangedAt is when the fake's o-1 last changed health.
var healthChangedAt = time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)

// addRegistry fills the fake's registry: three services, orders with three
// instances and a slot shard map, payments with one and a key-range map,
// search with none; and five leases.
func (f *fakeBackend) addRegistry() {
	f.services = map[string]*catalogpb.Service{
		"orders": {Name: "orders", Description: "takes orders", Tags: []string{"prod", "shop"},
			Metadata: map[string]string{"team": "shop", "tier": "1", "alert": "pager"}, Owner: "shop-team", CreateRevision: 5, ModRevision: 9},
		"payments": {Name: "payments", Tags: []string{"prod", "pci"}, CreateRevision: 6, ModRevision: 6},
		"search":   {Name: "search", CreateRevision: 7, ModRevision: 7},
	}
	f.instances = map[string][]*catalogpb.Instance{
		"orders": {
			{Service: "orders", Id: "o-1", Address: "10.0.1.1:80", Ports: map[string]int32{"http": 8080, "admin": 9090},
				Tags: []string{"v2"}, Metadata: map[string]string{"rack": "r1"}, Zone: "a", Dc: "dc1", Weight: 10,
				State: catalogpb.InstanceState_STATE_SERVING, Health: catalogpb.HealthStatus_PASSING, HealthOutput: "HTTP GET http://10.0.1.1/health: 200 OK",
				HealthChangedUnixNano: healthChangedAt.UnixNano(), Lease: 7, CreateRevision: 10, ModRevision: 12,
				Check: &catalogpb.HealthCheck{Http: "http://10.0.1.1/health", IntervalMs: 10000, TimeoutMs: 5000, FailuresBeforeCritical: 3, SuccessesBeforePassing: 2}},
			{Service: "orders", Id: "o-2", Address: "10.0.1.2:80", Zone: "b", Dc: "dc1", Weight: 1,
				State: catalogpb.InstanceState_STATE_SERVING, Health: catalogpb.HealthStatus_CRITICAL, CreateRevision: 11, ModRevision: 11},
			{Service: "orders", Id: "o-3", Address: "10.0.1.3:80", Tags: []string{"v2", "canary"}, Zone: "a", Dc: "dc1", Weight: 1,
				State: catalogpb.InstanceState_STATE_DRAINING, Health: catalogpb.HealthStatus_WARNING, CreateRevision: 13, ModRevision: 14},
		},
		"payments": {
			{Service: "payments", Id: "p-1", Address: "10.0.2.1:443", Dc: "dc1", Weight: 1,
				State: catalogpb.InstanceState_STATE_STARTING, Health: catalogpb.HealthStatus_PASSING, CreateRevision: 15, ModRevision: 15},
		},
	}
	f.shardMaps = map[string]*catalogpb.ShardMap{
		"orders": {Service: "orders", Epoch: 3, TotalSlots: 16, ModRevision: 20, Shards: []*catalogpb.Shard{
			{Id: "s1", Slots: []*catalogpb.SlotRange{{From: 0, To: 7}}, Replicas: []string{"o-1", "o-2"}},
			{Id: "s2", Slots: []*catalogpb.SlotRange{{From: 8, To: 11}, {From: 12, To: 15}}, Replicas: []string{"o-2"}},
		}},
		"payments": {Service: "payments", Epoch: 1, ModRevision: 21, Shards: []*catalogpb.Shard{
			{Id: "low", EndKey: []byte("m"), Replicas: []string{"p-1"}},
			{Id: "high", StartKey: []byte{'m', 0xff}, Replicas: []string{"p-1"}},
		}},
	}
	for i := range 5 {
		f.leases = append(f.leases, &catalogpb.LeaseStatus{Id: int64(100 + i), TtlSeconds: 10, RemainingMs: int64(9000 - i), Items: int64(i), GrantRevision: int64(30 + i)})
	}
	// A year-long lease: its remaining milliseconds pass 32 bits.
	f.leases[4].TtlSeconds, f.leases[4].RemainingMs = 365*24*3600, 365*24*3600*1000
}

func (f *fakeBackend) recordedGets() []*catalogpb.GetRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.gets)
}

func newFakeBackend() *fakeBackend {
	f := &fakeBackend{
		ready: true,
		status: &catalogpb.StatusResponse{
			Header:          &catalogpb.ResponseHeader{ClusterId: 0xfedcba9876543210, MemberId: 1, Revision: fakeRevision, RaftTerm: 3},
			Name:            "n1",
			Dc:              "dc1",
			Version:         "0.2.0",
			Leader:          2,
			Term:            3,
			CommitIndex:     100,
			AppliedIndex:    99,
			Revision:        fakeRevision,
			DbSize:          5 << 30, // past 32 bits on purpose
			CompactRevision: 7,
			Members: []*catalogpb.Member{
				{Id: 1, Name: "n1", PeerAddr: "10.0.0.1:7401", ClientAddr: "10.0.0.1:7400", Healthy: true, MatchIndex: 99},
				{Id: 2, Name: "n2", PeerAddr: "10.0.0.2:7401", ClientAddr: "10.0.0.2:7400", IsLeader: true, Healthy: true, MatchIndex: 100},
				{Id: 3, Name: "n3", PeerAddr: "10.0.0.3:7401", ClientAddr: "10.0.0.3:7400", IsLearner: true},
			},
		},
	}
	f.addRegistry()
	for i, key := range []string{"app/a", "app/b", "app/c", "app/d", "app/e", "other/x"} {
		f.kvs = append(f.kvs, &catalogpb.KeyValue{
			Key: []byte(key), Value: []byte("v-" + key),
			CreateRevision: int64(10 + i), ModRevision: int64(20 + i), Version: 1, Lease: 0,
		})
	}
	return f
}

func newTestHandler(t *testing.T, b Backend) (http.Handler, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	h, err := New(Config{Backend: b, Metrics: m})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h, m
}

// gqlResponse is a GraphQL response with data left raw for each test to decode.
type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

func serve(t *testing.T, h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// postGraphQL runs query with variables and decodes data into out (when not
// nil), returning the errors. It fails the test unless the status is 200.
func postGraphQL(t *testing.T, h http.Handler, query string, variables map[string]any, out any) []gqlError {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": variables})
	if err != nil {
		t.Fatalf("marshal request: %v", err)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return decodeGraphQL(t, serve(t, h, req), out)
}

func getGraphQL(t *testing.T, h http.Handler, query string, out any) []gqlError {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/graphql?query="+url.QueryEscape(query), nil)
	return decodeGraphQL(t, serve(t, h, req), out)
}

func decodeGraphQL(t *testing.T, rec *httptest.ResponseRecorder, out any) []gqlError {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var resp gqlResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode response %s: %v", rec.Body, err)
	}
	if out != nil && len(resp.Data) > 0 && string(resp.Data) != "null" {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			t.Fatalf("decode data %s: %v", resp.Data, err)
		}
	}
	return resp.Errors
}

func requireNoErrors(t *testing.T, errs []gqlError) {
	t.Helper()
	if len(errs) > 0 {
		t.Fatalf("graphql errors: %+v", errs)
	}
}
