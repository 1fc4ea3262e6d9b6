package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A fakeRegistry serves Registry on a local port: every call is recorded,
// pops the next scripted failure of its method if any, and otherwise answers
// a canned response (GetService and ListServices answer what their func
// fields say).
type fakeRegistry struct {
	catalogpb.UnimplementedRegistryServer

	addr     string
	mu       sync.Mutex
	failures map[string][]error
	requests map[string][]proto.Message

	getService   func(*catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error)
	listServices func(*catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error)
}

func startFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeRegistry{
		addr:     lis.Addr().String(),
		failures: make(map[string][]error),
		requests: make(map[string][]proto.Message),
	}
	srv := grpc.NewServer()
	catalogpb.RegisterRegistryServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeRegistry) failNext(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[method] = append(f.failures[method], errs...)
}

func (f *fakeRegistry) calls(method string) []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.requests[method]...)
}

func (f *fakeRegistry) handle(method string, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests[method] = append(f.requests[method], proto.Clone(req))
	if errs := f.failures[method]; len(errs) > 0 {
		f.failures[method] = errs[1:]
		return errs[0]
	}
	return nil
}

func fakeHeader(rev int64) *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: rev, RaftTerm: 4}
}

func (f *fakeRegistry) PutService(_ context.Context, req *catalogpb.PutServiceRequest) (*catalogpb.PutServiceResponse, error) {
	if err := f.handle("PutService", req); err != nil {
		return nil, err
	}
	return &catalogpb.PutServiceResponse{Header: fakeHeader(3), Service: req.GetService()}, nil
}

func (f *fakeRegistry) DeleteService(_ context.Context, req *catalogpb.DeleteServiceRequest) (*catalogpb.DeleteServiceResponse, error) {
	if err := f.handle("DeleteService", req); err != nil {
		return nil, err
	}
	return &catalogpb.DeleteServiceResponse{Header: fakeHeader(3), DeletedInstances: 2}, nil
}

func (f *fakeRegistry) Register(_ context.Context, req *catalogpb.RegisterRequest) (*catalogpb.RegisterResponse, error) {
	if err := f.handle("Register", req); err != nil {
		return nil, err
	}
	return &catalogpb.RegisterResponse{Header: fakeHeader(3), Instance: req.GetInstance()}, nil
}

func (f *fakeRegistry) Deregister(_ context.Context, req *catalogpb.DeregisterRequest) (*catalogpb.DeregisterResponse, error) {
	if err := f.handle("Deregister", req); err != nil {
		return nil, err
	}
	return &catalogpb.DeregisterResponse{Header: fakeHeader(3), Deleted: true}, nil
}

func (f *fakeRegistry) SetState(_ context.Context, req *catalogpb.SetStateRequest) (*catalogpb.SetStateResponse, error) {
	if err := f.handle("SetState", req); err != nil {
		return nil, err
	}
	return &catalogpb.SetStateResponse{Header: fakeHeader(3), Instance: &catalogpb.Instance{Service: req.GetService(), Id: req.GetId(), State: req.GetState()}}, nil
}

func (f *fakeRegistry) SetHealth(_ context.Context, req *catalogpb.SetHealthRequest) (*catalogpb.SetHealthResponse, error) {
	if err := f.handle("SetHealth", req); err != nil {
		return nil, err
	}
	return &catalogpb.SetHealthResponse{Header: fakeHeader(3), Instance: &catalogpb.Instance{Service: req.GetService(), Id: req.GetId(), Health: req.GetHealth()}}, nil
}

func (f *fakeRegistry) ListServices(_ context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	if err := f.handle("ListServices", req); err != nil {
		return nil, err
	}
	if f.listServices != nil {
		return f.listServices(req)
	}
	return &catalogpb.ListServicesResponse{Header: fakeHeader(3)}, nil
}

func (f *fakeRegistry) GetService(_ context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	if err := f.handle("GetService", req); err != nil {
		return nil, err
	}
	if f.getService != nil {
		return f.getService(req)
	}
	return &catalogpb.GetServiceResponse{Header: fakeHeader(3), Service: &catalogpb.Service{Name: req.GetName()}}, nil
}

func (f *fakeRegistry) GetInstance(_ context.Context, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error) {
	if err := f.handle("GetInstance", req); err != nil {
		return nil, err
	}
	return &catalogpb.GetInstanceResponse{Header: fakeHeader(3), Instance: &catalogpb.Instance{Service: req.GetService(), Id: req.GetId()}}, nil
}

func (f *fakeRegistry) GetShardMap(_ context.Context, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error) {
	if err := f.handle("GetShardMap", req); err != nil {
		return nil, err
	}
	return &catalogpb.GetShardMapResponse{Header: fakeHeader(3), Map: &catalogpb.ShardMap{Service: req.GetService()}}, nil
}

func (f *fakeRegistry) SetShardMap(_ context.Context, req *catalogpb.SetShardMapRequest) (*catalogpb.SetShardMapResponse, error) {
	if err := f.handle("SetShardMap", req); err != nil {
		return nil, err
	}
	return &catalogpb.SetShardMapResponse{Header: fakeHeader(3), Map: req.GetMap()}, nil
}

func TestRegistryCallsSendTheRequest(t *testing.T) {
	inst := &catalogpb.Instance{Service: "orders", Id: "o-1", Address: "10.0.0.1:80", Lease: 7}
	shardMap := &catalogpb.ShardMap{Service: "orders", Shards: []*catalogpb.Shard{{Id: "s1", Replicas: []string{"o-1"}}}}
	getReq := &catalogpb.GetServiceRequest{Name: "orders", Limit: 5, After: "o-0", Filter: &catalogpb.InstanceFilter{Zone: "z1"}}
	listReq := &catalogpb.ListServicesRequest{Tag: "prod", Limit: 2}
	tests := []struct {
		method string
		call   func(context.Context, *Client) error
		want   proto.Message
	}{
		{"PutService", func(ctx context.Context, c *Client) error {
			_, err := c.PutService(ctx, &catalogpb.Service{Name: "orders", Owner: "team-a"})
			return err
		}, &catalogpb.PutServiceRequest{Service: &catalogpb.Service{Name: "orders", Owner: "team-a"}}},
		{"DeleteService", func(ctx context.Context, c *Client) error {
			_, err := c.DeleteService(ctx, "orders", true)
			return err
		}, &catalogpb.DeleteServiceRequest{Name: "orders", Force: true}},
		{"Register", func(ctx context.Context, c *Client) error {
			_, err := c.RegisterInstance(ctx, inst)
			return err
		}, &catalogpb.RegisterRequest{Instance: inst}},
		{"Deregister", func(ctx context.Context, c *Client) error {
			_, err := c.Deregister(ctx, "orders", "o-1")
			return err
		}, &catalogpb.DeregisterRequest{Service: "orders", Id: "o-1"}},
		{"SetState", func(ctx context.Context, c *Client) error {
			_, err := c.SetInstanceState(ctx, "orders", "o-1", catalogpb.InstanceState_STATE_DRAINING)
			return err
		}, &catalogpb.SetStateRequest{Service: "orders", Id: "o-1", State: catalogpb.InstanceState_STATE_DRAINING}},
		{"SetHealth", func(ctx context.Context, c *Client) error {
			_, err := c.SetInstanceHealth(ctx, "orders", "o-1", catalogpb.HealthStatus_CRITICAL, "disk full")
			return err
		}, &catalogpb.SetHealthRequest{Service: "orders", Id: "o-1", Health: catalogpb.HealthStatus_CRITICAL, Output: "disk full"}},
		{"GetService", func(ctx context.Context, c *Client) error {
			_, err := c.GetService(ctx, getReq)
			return err
		}, getReq},
		{"GetInstance", func(ctx context.Context, c *Client) error {
			_, err := c.GetInstance(ctx, "orders", "o-1")
			return err
		}, &catalogpb.GetInstanceRequest{Service: "orders", Id: "o-1"}},
		{"ListServices", func(ctx context.Context, c *Client) error {
			_, err := c.ListServices(ctx, listReq)
			return err
		}, listReq},
		{"GetShardMap", func(ctx context.Context, c *Client) error {
			_, err := c.GetShardMap(ctx, "orders")
			return err
		}, &catalogpb.GetShardMapRequest{Service: "orders"}},
		{"SetShardMap", func(ctx context.Context, c *Client) error {
			_, err := c.SetShardMap(ctx, shardMap, 4)
			return err
		}, &catalogpb.SetShardMapRequest{Map: shardMap, ExpectedEpoch: 4}},
	}
	f := startFakeRegistry(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			if err := tt.call(t.Context(), c); err != nil {
				t.Fatalf("%s: %v", tt.method, err)
			}
			reqs := f.calls(tt.method)
			if len(reqs) == 0 {
				t.Fatalf("%s sent nothing", tt.method)
			}
			if got := reqs[len(reqs)-1]; !proto.Equal(got, tt.want) {
				t.Errorf("%s sent %v, want %v", tt.method, got, tt.want)
			}
		})
	}
}

// TestRegistryRetries: writes are sent again only after NO_LEADER (the write
// was not proposed); reads after any Unavailable.
func TestRegistryRetries(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection reset")
	tests := []struct {
		method    string
		call      func(context.Context, *Client) error
		failure   error
		wantCalls int
		wantErr   error
	}{
		{"Register", func(ctx context.Context, c *Client) error {
			_, err := c.RegisterInstance(ctx, &catalogpb.Instance{Service: "s", Id: "a"})
			return err
		}, unavailable, 1, ErrUnavailable},
		{"Register", func(ctx context.Context, c *Client) error {
			_, err := c.RegisterInstance(ctx, &catalogpb.Instance{Service: "s", Id: "a"})
			return err
		}, reasonErr(t, codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader"), 2, nil},
		{"SetHealth", func(ctx context.Context, c *Client) error {
			_, err := c.SetInstanceHealth(ctx, "s", "a", catalogpb.HealthStatus_PASSING, "")
			return err
		}, unavailable, 1, ErrUnavailable},
		{"SetShardMap", func(ctx context.Context, c *Client) error {
			_, err := c.SetShardMap(ctx, &catalogpb.ShardMap{Service: "s"}, 0)
			return err
		}, reasonErr(t, codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT, "timed out"), 1, ErrTimeout},
		{"GetService", func(ctx context.Context, c *Client) error {
			_, err := c.GetService(ctx, &catalogpb.GetServiceRequest{Name: "s"})
			return err
		}, unavailable, 2, nil},
		{"ListServices", func(ctx context.Context, c *Client) error {
			_, err := c.ListServices(ctx, nil)
			return err
		}, unavailable, 2, nil},
		{"GetShardMap", func(ctx context.Context, c *Client) error {
			_, err := c.GetShardMap(ctx, "s")
			return err
		}, unavailable, 2, nil},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d-%s", i, tt.method), func(t *testing.T) {
			f := startFakeRegistry(t)
			c := newTestClient(t, Config{Endpoints: []string{f.addr}})
			f.failNext(tt.method, tt.failure)
			err := tt.call(t.Context(), c)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("%s = %v, want success after a retry", tt.method, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s = %v, want %v", tt.method, err, tt.wantErr)
			}
			if got := len(f.calls(tt.method)); got != tt.wantCalls {
				t.Errorf("%s was sent %d times, want %d", tt.method, got, tt.wantCalls)
			}
		})
	}
}

func TestRegistryErrorsMapToSentinels(t *testing.T) {
	f := startFakeRegistry(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	f.failNext("GetService", reasonErr(t, codes.NotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND, `service "x" not found`))
	if _, err := c.Discover(t.Context(), "x"); !errors.Is(err, ErrServiceNotFound) {
		t.Errorf("Discover of a missing service = %v, want ErrServiceNotFound", err)
	}
	f.failNext("SetShardMap", reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_EPOCH_MISMATCH, "epoch is 3, expected 2"))
	if _, err := c.SetShardMap(t.Context(), &catalogpb.ShardMap{Service: "x"}, 2); !errors.Is(err, ErrEpochMismatch) {
		t.Errorf("SetShardMap with a stale epoch = %v, want ErrEpochMismatch", err)
	}
	f.failNext("Deregister", reasonErr(t, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, "instance id must be 1..128 characters"))
	if _, err := c.Deregister(t.Context(), "x", ""); !errors.Is(err, ErrInvalidArgument) || err.Error() != "instance id must be 1..128 characters" {
		t.Errorf("Deregister with an empty id = %v, want ErrInvalidArgument with the server's message", err)
	}
}

func TestRegistryNilArgumentsAreNotSent(t *testing.T) {
	f := startFakeRegistry(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	ctx := t.Context()
	calls := map[string]func() error{
		"PutService": func() error { _, err := c.PutService(ctx, nil); return err },
		"Register":   func() error { _, err := c.RegisterInstance(ctx, nil); return err },
		"GetService": func() error { _, err := c.GetService(ctx, nil); return err },
		"SetShardMap": func() error {
			_, err := c.SetShardMap(ctx, nil, 0)
			return err
		},
	}
	for method, call := range calls {
		if err := call(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s(nil) = %v, want ErrInvalidArgument", method, err)
		}
		if n := len(f.calls(method)); n != 0 {
			t.Errorf("%s(nil) was sent %d times", method, n)
		}
	}
}

// pagedService answers GetService from insts, limit per page, after the
// request's After, with the header revision rev+page number.
func pagedService(insts []*catalogpb.Instance, limit int, rev int64) func(*catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	var mu sync.Mutex
	page := int64(0)
	return func(req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		var out []*catalogpb.Instance
		more := false
		for _, inst := range insts {
			if inst.GetId() <= req.GetAfter() {
				continue
			}
			if len(out) == limit {
				more = true
				break
			}
			out = append(out, inst)
		}
		resp := &catalogpb.GetServiceResponse{Header: fakeHeader(rev + page), Instances: out, More: more, Count: int64(len(insts))}
		page++
		return resp, nil
	}
}

func TestDiscoverReadsEveryPage(t *testing.T) {
	f := startFakeRegistry(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	var insts []*catalogpb.Instance
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		insts = append(insts, &catalogpb.Instance{Service: "orders", Id: id})
	}
	f.getService = pagedService(insts, 2, 10)

	got, err := c.Discover(t.Context(), "orders", Healthy(), InZone("z1"), Serializable())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	var ids []string
	for _, inst := range got {
		ids = append(ids, inst.GetId())
	}
	if fmt.Sprint(ids) != "[a b c d e]" {
		t.Errorf("Discover returned %v, want [a b c d e]", ids)
	}
	reqs := f.calls("GetService")
	var afters []string
	for _, r := range reqs {
		req := r.(*catalogpb.GetServiceRequest)
		afters = append(afters, req.GetAfter())
		want := &catalogpb.InstanceFilter{Healthy: true, Zone: "z1"}
		if !proto.Equal(req.GetFilter(), want) || req.GetConsistency() != catalogpb.Consistency_SERIALIZABLE || req.GetName() != "orders" {
			t.Errorf("GetService request %v, want name orders, filter %v, SERIALIZABLE", req, want)
		}
	}
	if fmt.Sprintf("%q", afters) != `["" "b" "d"]` {
		t.Errorf("pages asked after %q, want [\"\" \"b\" \"d\"]", afters)
	}

	// A listing's revision is its oldest page's.
	_, rev, err := c.listInstances(t.Context(), "orders", nil, catalogpb.Consistency_LINEARIZABLE)
	if err != nil || rev != 13 {
		t.Errorf("listInstances revision = %d, %v; want 13 (the first page of the second listing)", rev, err)
	}
	f.getService = func(req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
		// Serializable pages from members at different revisions.
		if req.GetAfter() == "" {
			return &catalogpb.GetServiceResponse{Header: fakeHeader(20), Instances: insts[:2], More: true}, nil
		}
		return &catalogpb.GetServiceResponse{Header: fakeHeader(17), Instances: insts[2:]}, nil
	}
	if _, rev, err := c.listInstances(t.Context(), "orders", nil, catalogpb.Consistency_SERIALIZABLE); err != nil || rev != 17 {
		t.Errorf("listInstances revision = %d, %v; want 17, the oldest page's", rev, err)
	}
}

func TestFiltersBuildTheRequestFilter(t *testing.T) {
	s := newFilterSettings([]Filter{
		Healthy(), HasTag("a"), HasTag("b"), InZone("z"), WithMeta("env", "prod"), WithMeta("tier", "1"),
		InState(catalogpb.InstanceState_STATE_SERVING, catalogpb.InstanceState_STATE_DRAINING),
		WithHealth(catalogpb.HealthStatus_WARNING), nil,
	})
	want := &catalogpb.InstanceFilter{
		Healthy:  true,
		Tags:     []string{"a", "b"},
		Zone:     "z",
		Metadata: map[string]string{"env": "prod", "tier": "1"},
		State:    []catalogpb.InstanceState{catalogpb.InstanceState_STATE_SERVING, catalogpb.InstanceState_STATE_DRAINING},
		Health:   []catalogpb.HealthStatus{catalogpb.HealthStatus_WARNING},
	}
	if !proto.Equal(s.filter, want) {
		t.Errorf("filter = %v, want %v", s.filter, want)
	}
	if s.consistency() != catalogpb.Consistency_LINEARIZABLE {
		t.Errorf("consistency without Serializable = %v, want LINEARIZABLE", s.consistency())
	}
}

func TestMatchInstance(t *testing.T) {
	inst := &catalogpb.Instance{
		Id: "a", Tags: []string{"x", "y"}, Zone: "z1", Metadata: map[string]string{"env": "prod"},
		State: catalogpb.InstanceState_STATE_SERVING, Health: catalogpb.HealthStatus_WARNING,
	}
	tests := []struct {
		name    string
		filters []Filter
		inst    *catalogpb.Instance
		want    bool
	}{
		{"no filter", nil, inst, true},
		{"healthy: warning and serving", []Filter{Healthy()}, inst, true},
		{"healthy: critical", []Filter{Healthy()}, withHealth(inst, catalogpb.HealthStatus_CRITICAL), false},
		{"healthy: draining", []Filter{Healthy()}, withState(inst, catalogpb.InstanceState_STATE_DRAINING), false},
		{"healthy: starting", []Filter{Healthy()}, withState(inst, catalogpb.InstanceState_STATE_STARTING), false},
		{"every tag present", []Filter{HasTag("x"), HasTag("y")}, inst, true},
		{"a tag missing", []Filter{HasTag("x"), HasTag("w")}, inst, false},
		{"zone", []Filter{InZone("z1")}, inst, true},
		{"other zone", []Filter{InZone("z2")}, inst, false},
		{"metadata pair", []Filter{WithMeta("env", "prod")}, inst, true},
		{"metadata other value", []Filter{WithMeta("env", "dev")}, inst, false},
		{"metadata missing key with empty value", []Filter{WithMeta("team", "")}, inst, false},
		{"state listed", []Filter{InState(catalogpb.InstanceState_STATE_DRAINING, catalogpb.InstanceState_STATE_SERVING)}, inst, true},
		{"state not listed", []Filter{InState(catalogpb.InstanceState_STATE_DRAINING)}, inst, false},
		{"health listed", []Filter{WithHealth(catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING)}, inst, true},
		{"health not listed", []Filter{WithHealth(catalogpb.HealthStatus_PASSING)}, inst, false},
		{"all together", []Filter{Healthy(), HasTag("y"), InZone("z1"), WithMeta("env", "prod")}, inst, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchInstance(newFilterSettings(tt.filters).filter, tt.inst); got != tt.want {
				t.Errorf("matchInstance = %v, want %v", got, tt.want)
			}
		})
	}
}

func withHealth(inst *catalogpb.Instance, h catalogpb.HealthStatus) *catalogpb.Instance {
	c := proto.Clone(inst).(*catalogpb.Instance)
	c.Health = h
	return c
}

func withState(inst *catalogpb.Instance, s catalogpb.InstanceState) *catalogpb.Instance {
	c := proto.Clone(inst).(*catalogpb.Instance)
	c.State = s
	return c
}

// TestResolverListOfMissingService: a service that does not exist lists as
// empty, at a revision read before a second look found it still missing.
func TestResolverListOfMissingService(t *testing.T) {
	f := startFakeRegistry(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	notFound := reasonErr(t, codes.NotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND, "no such service")
	f.failNext("GetService", notFound, notFound)
	f.listServices = func(*catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
		return &catalogpb.ListServicesResponse{Header: fakeHeader(41)}, nil
	}
	insts, rev, err := clientSource{c}.list(t.Context(), "later", catalogpb.Consistency_SERIALIZABLE)
	if err != nil || len(insts) != 0 || rev != 41 {
		t.Fatalf("list of a missing service = %v, %d, %v; want nothing at revision 41", insts, rev, err)
	}
	gets := f.calls("GetService")
	if len(gets) != 2 {
		t.Fatalf("GetService sent %d times, want 2 (before and after reading the revision)", len(gets))
	}
	// The revision and the second look are linearizable: a serializable
	// second look could come from a member behind the revision read.
	probes := f.calls("ListServices")
	if len(probes) != 1 || probes[0].(*catalogpb.ListServicesRequest).GetConsistency() != catalogpb.Consistency_LINEARIZABLE ||
		gets[1].(*catalogpb.GetServiceRequest).GetConsistency() != catalogpb.Consistency_LINEARIZABLE {
		t.Errorf("revision read %v and second look %v, want both linearizable", probes, gets[1])
	}

	// Created between the two looks: the second listing is used.
	f.failNext("GetService", notFound)
	f.getService = pagedService([]*catalogpb.Instance{{Service: "later", Id: "a"}}, 10, 50)
	insts, rev, err = clientSource{c}.list(t.Context(), "later", catalogpb.Consistency_LINEARIZABLE)
	if err != nil || len(insts) != 1 || rev != 50 {
		t.Fatalf("list of a service created meanwhile = %v, %d, %v; want instance a at revision 50", insts, rev, err)
	}
}
