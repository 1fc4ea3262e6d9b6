package server

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

func registryClient(t *testing.T, addr string) catalogpb.RegistryClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogpb.NewRegistryClient(conn)
}

// TestRegistryAcrossMembers registers on a follower and reads on the other
// members, then walks the state, health, shard map and delete calls, and the
// errors of bad requests, all over gRPC.
func TestRegistryAcrossMembers(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	var followers []*Server
	for _, s := range c.servers {
		if s != lead {
			followers = append(followers, s)
		}
	}
	onFollower := registryClient(t, followers[0].ClientAddr())
	onOther := registryClient(t, followers[1].ClientAddr())
	onLeader := registryClient(t, lead.ClientAddr())
	ctx := t.Context()

	startRev := func() int64 {
		t.Helper()
		resp, err := onLeader.ListServices(ctx, &catalogpb.ListServicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}()

	reg, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{
		Service: "orders", Id: "a", Address: "10.0.0.1:8080", Tags: []string{"v1"}, Zone: "z1", Dc: "client-chosen",
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := reg.Header
	if h.Revision != startRev+1 || h.MemberId != followers[0].ID() || h.ClusterId == 0 || h.RaftTerm == 0 {
		t.Errorf("register header = %v, want revision %d from member %x", h, startRev+1, followers[0].ID())
	}
	if in := reg.Instance; in.Dc != "dc1" || in.State != catalogpb.InstanceState_STATE_SERVING ||
		in.Health != catalogpb.HealthStatus_PASSING || in.CreateRevision != h.Revision || in.HealthChangedUnixNano == 0 {
		t.Errorf("registered instance = %v, want dc1, SERVING, PASSING, created at %d", in, h.Revision)
	}

	// A linearizable read on another member sees the write at once.
	got, err := onOther.GetService(ctx, &catalogpb.GetServiceRequest{Name: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Instances) != 1 || got.Instances[0].Id != "a" || got.Count != 1 || got.Header.Revision < h.Revision || got.Header.MemberId != followers[1].ID() {
		t.Fatalf("read on another member = %v", got)
	}
	// A serializable read answers from the member's own state.
	waitFor(t, 5*time.Second, "serializable read sees the instance", func() error {
		resp, err := onLeader.GetService(ctx, &catalogpb.GetServiceRequest{Name: "orders", Consistency: catalogpb.Consistency_SERIALIZABLE})
		if err != nil {
			return err
		}
		if resp.Count != 1 {
			return status.Errorf(codes.NotFound, "count %d", resp.Count)
		}
		return nil
	})

	// The same registration again changes nothing.
	again, err := onLeader.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{
		Service: "orders", Id: "a", Address: "10.0.0.1:8080", Tags: []string{"v1"}, Zone: "z1",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Header.Revision != h.Revision || again.Instance.ModRevision != h.Revision {
		t.Errorf("repeated register moved the revision to %d (instance mod %d), want %d", again.Header.Revision, again.Instance.ModRevision, h.Revision)
	}

	if _, err := onOther.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders", Id: "b", Address: "10.0.0.2:8080", Zone: "z2"}}); err != nil {
		t.Fatal(err)
	}
	st, err := onFollower.SetState(ctx, &catalogpb.SetStateRequest{Service: "orders", Id: "b", State: catalogpb.InstanceState_STATE_DRAINING})
	if err != nil || st.Instance.State != catalogpb.InstanceState_STATE_DRAINING {
		t.Fatalf("set state: %v, %v", st, err)
	}
	hl, err := onFollower.SetHealth(ctx, &catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: catalogpb.HealthStatus_WARNING, Output: "slow"})
	if err != nil || hl.Instance.Health != catalogpb.HealthStatus_WARNING || hl.Instance.HealthOutput != "slow" {
		t.Fatalf("set health: %v, %v", hl, err)
	}
	healthy, err := onOther.GetService(ctx, &catalogpb.GetServiceRequest{Name: "orders", Filter: &catalogpb.InstanceFilter{Healthy: true}})
	if err != nil || len(healthy.Instances) != 1 || healthy.Instances[0].Id != "a" {
		t.Fatalf("healthy instances = %v, %v; want only a (b drains)", healthy, err)
	}
	inst, err := onOther.GetInstance(ctx, &catalogpb.GetInstanceRequest{Service: "orders", Id: "b"})
	if err != nil || inst.Instance.State != catalogpb.InstanceState_STATE_DRAINING {
		t.Fatalf("get instance: %v, %v", inst, err)
	}
	list, err := onOther.ListServices(ctx, &catalogpb.ListServicesRequest{})
	if err != nil || len(list.Services) != 1 {
		t.Fatalf("list services: %v, %v", list, err)
	}
	if sum := list.Services[0]; sum.Instances != 2 || sum.Warning != 1 || sum.Passing != 1 || sum.Serving != 1 {
		t.Errorf("summary = %v, want 2 instances, 1 warning, 1 passing, 1 serving", sum)
	}

	sm, err := onFollower.SetShardMap(ctx, &catalogpb.SetShardMapRequest{Map: &catalogpb.ShardMap{Service: "orders", Shards: []*catalogpb.Shard{
		{Id: "s1", EndKey: []byte("m"), Replicas: []string{"a", "b"}}, {Id: "s2", StartKey: []byte("m"), Replicas: []string{"b"}},
	}}})
	if err != nil || sm.Map.Epoch != 1 {
		t.Fatalf("set shard map: %v, %v", sm, err)
	}
	gm, err := onOther.GetShardMap(ctx, &catalogpb.GetShardMapRequest{Service: "orders"})
	if err != nil || gm.Map.Epoch != 1 || len(gm.Map.Shards) != 2 || gm.Header.Revision < sm.Header.Revision {
		t.Fatalf("get shard map on another member: %v, %v", gm, err)
	}

	before, err := onLeader.ListServices(ctx, &catalogpb.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	huge := &catalogpb.Instance{Service: "orders", Id: "c", Address: "h:1", Tags: make([]string, 65)}
	for i := range huge.Tags {
		huge.Tags[i] = "t"
	}
	for _, tc := range []struct {
		name   string
		call   func() error
		code   codes.Code
		reason catalogpb.ErrorReason
		msg    []string
	}{
		{"register without instance", func() error { _, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{}); return err },
			codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"instance is missing"}},
		{"register with empty service", func() error {
			_, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Id: "c", Address: "h:1"}})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"instance.service must be 1..63 characters of a-z, 0-9 and '-'"}},
		{"register with address without port", func() error {
			_, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders", Id: "c", Address: "10.0.0.3"}})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"instance.address must be host:port", "\"10.0.0.3\""}},
		{"register with too many tags", func() error {
			_, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: huge})
			return err
		},
			codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"instance.tags may hold at most 64 tags, got 65"}},
		{"register with a bad check", func() error {
			_, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders", Id: "c", Address: "h:1",
				Check: &catalogpb.HealthCheck{Http: "http://h/", IntervalMs: 100}}})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"instance.check.interval_ms must be 1000.."}},
		{"register with an unknown lease", func() error {
			_, err := onFollower.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders", Id: "c", Address: "h:1", Lease: 424242}})
			return err
		}, codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND, []string{"424242"}},
		{"get unknown service", func() error {
			_, err := onOther.GetService(ctx, &catalogpb.GetServiceRequest{Name: "nope"})
			return err
		}, codes.NotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND, []string{"\"nope\""}},
		{"get unknown instance", func() error {
			_, err := onOther.GetInstance(ctx, &catalogpb.GetInstanceRequest{Service: "orders", Id: "zz"})
			return err
		}, codes.NotFound, catalogpb.ErrorReason_INSTANCE_NOT_FOUND, []string{"\"zz\""}},
		{"set state of unknown instance", func() error {
			_, err := onFollower.SetState(ctx, &catalogpb.SetStateRequest{Service: "orders", Id: "zz", State: catalogpb.InstanceState_STATE_STOPPED})
			return err
		}, codes.NotFound, catalogpb.ErrorReason_INSTANCE_NOT_FOUND, nil},
		{"set state unspecified", func() error {
			_, err := onFollower.SetState(ctx, &catalogpb.SetStateRequest{Service: "orders", Id: "a"})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"state must be STATE_STARTING, STATE_SERVING, STATE_DRAINING or STATE_STOPPED"}},
		{"set health unspecified", func() error {
			_, err := onFollower.SetHealth(ctx, &catalogpb.SetHealthRequest{Service: "orders", Id: "a"})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"health must be PASSING, WARNING or CRITICAL"}},
		{"get service with limit out of range", func() error {
			_, err := onOther.GetService(ctx, &catalogpb.GetServiceRequest{Name: "orders", Limit: 20000})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_LIMIT, []string{"0..10000"}},
		{"overlapping shards", func() error {
			_, err := onFollower.SetShardMap(ctx, &catalogpb.SetShardMapRequest{ExpectedEpoch: 1, Map: &catalogpb.ShardMap{Service: "orders", Shards: []*catalogpb.Shard{
				{Id: "s1", EndKey: []byte("n")}, {Id: "s2", StartKey: []byte("m")},
			}}})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"overlap"}},
		{"stale shard map epoch", func() error {
			_, err := onFollower.SetShardMap(ctx, &catalogpb.SetShardMapRequest{ExpectedEpoch: 0, Map: &catalogpb.ShardMap{Service: "orders"}})
			return err
		}, codes.FailedPrecondition, catalogpb.ErrorReason_EPOCH_MISMATCH, []string{"at epoch 1", "expected_epoch is 0"}},
		{"delete service with instances", func() error {
			_, err := onFollower.DeleteService(ctx, &catalogpb.DeleteServiceRequest{Name: "orders"})
			return err
		}, codes.FailedPrecondition, catalogpb.ErrorReason_SERVICE_NOT_EMPTY, []string{"2 instances", "force"}},
		{"delete unknown service", func() error {
			_, err := onFollower.DeleteService(ctx, &catalogpb.DeleteServiceRequest{Name: "nope"})
			return err
		}, codes.NotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND, nil},
		{"put service with bad name", func() error {
			_, err := onFollower.PutService(ctx, &catalogpb.PutServiceRequest{Service: &catalogpb.Service{Name: "Orders"}})
			return err
		}, codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, []string{"service.name", "\"Orders\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code || reasonOf(err) != tc.reason.String() {
				t.Fatalf("error = %v (reason %q), want %s with reason %s", err, reasonOf(err), tc.code, tc.reason)
			}
			for _, m := range tc.msg {
				if !strings.Contains(status.Convert(err).Message(), m) {
					t.Errorf("message %q does not mention %q", status.Convert(err).Message(), m)
				}
			}
		})
	}
	after, err := onLeader.ListServices(ctx, &catalogpb.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("refused requests moved the revision from %d to %d", before.Header.Revision, after.Header.Revision)
	}

	// Force deletes instances, shard map and service in one revision.
	del, err := onOther.DeleteService(ctx, &catalogpb.DeleteServiceRequest{Name: "orders", Force: true})
	if err != nil || del.DeletedInstances != 2 || del.Header.Revision != after.Header.Revision+1 {
		t.Fatalf("forced delete: %v, %v; want 2 instances at revision %d", del, err, after.Header.Revision+1)
	}
	if _, err := onFollower.GetShardMap(ctx, &catalogpb.GetShardMapRequest{Service: "orders"}); status.Code(err) != codes.NotFound {
		t.Errorf("shard map after delete: %v, want NotFound", err)
	}
	list, err = onFollower.ListServices(ctx, &catalogpb.ListServicesRequest{})
	if err != nil || len(list.Services) != 0 {
		t.Errorf("services after delete: %v, %v", list, err)
	}
}

// TestApplyRegistryCommands drives the state machine with registry commands
// as the log carries them: one revision per command that changed something,
// none for a repeat or a refusal, and time from the command.
func TestApplyRegistryCommands(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	cmds := []*catalogpb.Command{
		{NowUnixNano: 111, Op: &catalogpb.Command_Register{Register: &catalogpb.RegisterCommand{Dc: "dc7",
			Instance: &catalogpb.Instance{Service: "orders", Id: "a", Address: "h:1"}}}},
		{NowUnixNano: 222, Op: &catalogpb.Command_Register{Register: &catalogpb.RegisterCommand{Dc: "dc7",
			Instance: &catalogpb.Instance{Service: "orders", Id: "a", Address: "h:1"}}}},
		{Op: &catalogpb.Command_Register{Register: &catalogpb.RegisterCommand{Instance: &catalogpb.Instance{Service: "orders", Id: "b", Address: "h"}}}},
		{NowUnixNano: 333, Op: &catalogpb.Command_SetHealth{SetHealth: &catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: catalogpb.HealthStatus_CRITICAL}}},
		{Op: &catalogpb.Command_SetShardMap{SetShardMap: &catalogpb.SetShardMapRequest{Map: &catalogpb.ShardMap{Service: "orders"}}}},
		{Op: &catalogpb.Command_PutService{PutService: &catalogpb.PutServiceRequest{Service: &catalogpb.Service{Name: "orders", Owner: "ann"}}}},
		{Op: &catalogpb.Command_SetState{SetState: &catalogpb.SetStateRequest{Service: "orders", Id: "a", State: catalogpb.InstanceState_STATE_STOPPED}}},
		{Op: &catalogpb.Command_Deregister{Deregister: &catalogpb.DeregisterRequest{Service: "orders", Id: "a"}}},
		{Op: &catalogpb.Command_DeleteService{DeleteService: &catalogpb.DeleteServiceRequest{Name: "orders"}}},
	}
	var ents []raftpb.Entry
	for i, cmd := range cmds {
		cmd.RequestId = uint64(i + 1)
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		ents = append(ents, raftpb.Entry{Index: uint64(i + 1), Term: 1, Type: raftpb.EntryNormal, Data: data})
	}
	results := sm.Apply(ents)

	reg := results[0].Value.(*catalogpb.RegisterResponse)
	if results[0].Err != nil || reg.Header.Revision != 1 || reg.Instance.Dc != "dc7" || reg.Instance.HealthChangedUnixNano != 111 {
		t.Errorf("register: %v, %v", reg, results[0].Err)
	}
	if again := results[1].Value.(*catalogpb.RegisterResponse); results[1].Err != nil || again.Header.Revision != 1 {
		t.Errorf("repeated register: %v, %v; want revision 1 unchanged", again, results[1].Err)
	}
	if !errors.Is(results[2].Err, registry.ErrInvalidArgument) {
		t.Errorf("register without a port: %v, want ErrInvalidArgument", results[2].Err)
	}
	if h := results[3].Value.(*catalogpb.SetHealthResponse); h.Header.Revision != 2 || h.Instance.HealthChangedUnixNano != 333 {
		t.Errorf("set health: %v", h)
	}
	if del, ok := results[8].Value.(*catalogpb.DeleteServiceResponse); !ok || results[8].Err != nil || del.Header.Revision != 7 {
		t.Errorf("delete of the emptied service: %v, %v; want revision 7", results[8].Value, results[8].Err)
	}
	// register, set health, shard map, put service, set state, deregister, delete.
	if got, want := eventRevisions(t, sm), []int64{1, 2, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("event revisions = %v, want %v", got, want)
	}
	if sm.Revision() != 7 {
		t.Errorf("revision = %d, want 7", sm.Revision())
	}
}
