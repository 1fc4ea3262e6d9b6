package registry_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/registry"
)

func TestRegisterCreatesServiceAndInstanceInOneRevision(t *testing.T) {
	s := newRegStore(t)
	in := inst("orders", "a")
	in.Ports = map[string]int32{"http": 8081}
	in.Tags = []string{"v1"}
	in.Metadata = map[string]string{"rack": "r1"}
	in.Zone = "z1"
	// Fields the server owns are ignored.
	in.Dc, in.Health, in.HealthOutput, in.CreateRevision = "elsewhere", catalogpb.HealthStatus_CRITICAL, "client text", 42
	resp, evs, err := s.register(in)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT service orders", "PUT instance orders/a")
	if s.rev != 1 {
		t.Fatalf("revision = %d, want 1", s.rev)
	}
	got := resp.Instance
	want := &catalogpb.Instance{
		Service: "orders", Id: "a", Address: "10.0.0.1:8080", Ports: map[string]int32{"http": 8081},
		Tags: []string{"v1"}, Metadata: map[string]string{"rack": "r1"}, Zone: "z1", Dc: "dc1", Weight: 1,
		State: catalogpb.InstanceState_STATE_SERVING, Health: catalogpb.HealthStatus_PASSING,
		HealthChangedUnixNano: s.now, CreateRevision: 1, ModRevision: 1,
	}
	protoEqual(t, "registered instance", got, want)
	protoEqual(t, "event instance", evs[1].Instance, want)
	if ev := evs[1]; ev.PrevInstance != nil || ev.PrevKv != nil || ev.Kv.CreateRevision != 1 {
		t.Errorf("instance event = %v, want a create with no previous item", ev)
	}
	if svc := evs[0].Service; svc.Name != "orders" || svc.CreateRevision != 1 {
		t.Errorf("service event = %v", svc)
	}
	stored, err := s.getInstance("orders", "a")
	if err != nil {
		t.Fatal(err)
	}
	protoEqual(t, "stored instance", stored, want)

	// A second instance of the service does not touch the service.
	_, evs, err = s.register(inst("orders", "b"))
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT instance orders/b")
}

func TestRegisterIsIdempotentAndUpdates(t *testing.T) {
	s := newRegStore(t)
	in := inst("orders", "a")
	in.Tags = []string{"v1"}
	in.Check = &catalogpb.HealthCheck{Http: "http://10.0.0.1:8080/health"}
	first := s.mustRegister(in)
	if first.Health != catalogpb.HealthStatus_CRITICAL || first.HealthChangedUnixNano != s.now {
		t.Fatalf("instance with a check starts %s at %d, want CRITICAL at %d", first.Health, first.HealthChangedUnixNano, s.now)
	}
	wantCheck := &catalogpb.HealthCheck{Http: "http://10.0.0.1:8080/health", IntervalMs: 10000, TimeoutMs: 5000, FailuresBeforeCritical: 3, SuccessesBeforePassing: 2}
	protoEqual(t, "stored check", first.Check, wantCheck)

	// The same registration again: nothing changes.
	rev := s.rev
	resp, evs, err := s.register(proto.CloneOf(in))
	if err != nil || len(evs) != 0 || s.rev != rev {
		t.Fatalf("repeated register: %d events, err %v, revision %d; want none, nil, %d", len(evs), err, s.rev, rev)
	}
	protoEqual(t, "repeated register response", resp.Instance, first)
	// Defaults spelled out are the same registration.
	spelled := proto.CloneOf(in)
	spelled.Check = proto.CloneOf(wantCheck)
	spelled.Weight, spelled.State = 1, catalogpb.InstanceState_STATE_SERVING
	if _, evs, _ := s.register(spelled); len(evs) != 0 {
		t.Errorf("register with defaults spelled out changed the instance: %v", eventSummary(evs))
	}

	// Probes passed; a re-register with other tags keeps the health.
	s.now += 100
	if _, _, err := s.setHealth(&catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: catalogpb.HealthStatus_PASSING, Output: "ok"}); err != nil {
		t.Fatal(err)
	}
	passingAt := s.now
	s.now += 100
	s.setState("orders", "a", catalogpb.InstanceState_STATE_DRAINING)
	upd := proto.CloneOf(in)
	upd.Tags = []string{"v2"}
	prevRev := s.rev
	resp, evs, err = s.register(upd)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT instance orders/a")
	got := resp.Instance
	if got.CreateRevision != first.CreateRevision || got.ModRevision != s.rev || got.Tags[0] != "v2" {
		t.Errorf("update = %v, want create revision %d, mod revision %d, tags [v2]", got, first.CreateRevision, s.rev)
	}
	if got.Health != catalogpb.HealthStatus_PASSING || got.HealthOutput != "ok" || got.HealthChangedUnixNano != passingAt {
		t.Errorf("update with the same check reset health to %s %q at %d, want PASSING \"ok\" at %d", got.Health, got.HealthOutput, got.HealthChangedUnixNano, passingAt)
	}
	if got.State != catalogpb.InstanceState_STATE_DRAINING {
		t.Errorf("register without a state moved the state to %s, want it kept (DRAINING)", got.State)
	}
	if evs[0].PrevInstance.GetTags()[0] != "v1" || evs[0].PrevKv.GetModRevision() != prevRev {
		t.Errorf("update event lacks the previous instance: %v", evs[0])
	}

	// A changed check starts over: critical, changed now.
	s.now += 100
	upd.Check = &catalogpb.HealthCheck{Tcp: "10.0.0.1:8080"}
	resp, _, err = s.register(upd)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Instance; got.Health != catalogpb.HealthStatus_CRITICAL || got.HealthChangedUnixNano != s.now || got.HealthOutput != "" {
		t.Errorf("new check: health %s %q at %d, want CRITICAL \"\" at %d", got.Health, got.HealthOutput, got.HealthChangedUnixNano, s.now)
	}
	// Dropping the check makes it passing.
	s.now += 100
	upd.Check = nil
	resp, _, _ = s.register(upd)
	if got := resp.Instance; got.Health != catalogpb.HealthStatus_PASSING || got.HealthChangedUnixNano != s.now || got.Check != nil {
		t.Errorf("check removed: health %s at %d, check %v; want PASSING at %d and no check", got.Health, got.HealthChangedUnixNano, got.Check, s.now)
	}
	// An explicit state is applied.
	upd.State = catalogpb.InstanceState_STATE_STARTING
	resp, _, _ = s.register(upd)
	if resp.Instance.State != catalogpb.InstanceState_STATE_STARTING {
		t.Errorf("explicit state = %s, want STATE_STARTING", resp.Instance.State)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	s := newRegStore(t)
	s.mustRegister(inst("orders", "a"))
	before, rev := s.dump(), s.rev
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%03d", i)] = "v"
		}
		return m
	}
	cases := []struct {
		name   string
		mutate func(in *catalogpb.Instance)
		target error
		want   []string
	}{
		{"empty service", func(in *catalogpb.Instance) { in.Service = "" }, registry.ErrInvalidArgument, []string{"instance.service", "1..63"}},
		{"upper-case service", func(in *catalogpb.Instance) { in.Service = "Orders" }, registry.ErrInvalidArgument, []string{"instance.service", "\"Orders\""}},
		{"empty id", func(in *catalogpb.Instance) { in.Id = "" }, registry.ErrInvalidArgument, []string{"instance.id", "1..128"}},
		{"long id", func(in *catalogpb.Instance) { in.Id = strings.Repeat("a", 129) }, registry.ErrInvalidArgument, []string{"instance.id", "1..128"}},
		{"id with slash", func(in *catalogpb.Instance) { in.Id = "a/b" }, registry.ErrInvalidArgument, []string{"instance.id", "A-Z, a-z, 0-9, '.', '_', ':' and '-'"}},
		{"no port", func(in *catalogpb.Instance) { in.Address = "10.0.0.1" }, registry.ErrInvalidArgument, []string{"instance.address", "host:port"}},
		{"empty address", func(in *catalogpb.Instance) { in.Address = "" }, registry.ErrInvalidArgument, []string{"instance.address", "host:port"}},
		{"port 0", func(in *catalogpb.Instance) { in.Address = "10.0.0.1:0" }, registry.ErrInvalidArgument, []string{"instance.address port", "1..65535", "\"0\""}},
		{"port too big", func(in *catalogpb.Instance) { in.Address = "h:65536" }, registry.ErrInvalidArgument, []string{"1..65535"}},
		{"port not a number", func(in *catalogpb.Instance) { in.Address = "h:http" }, registry.ErrInvalidArgument, []string{"instance.address port"}},
		{"empty host", func(in *catalogpb.Instance) { in.Address = ":80" }, registry.ErrInvalidArgument, []string{"instance.address host"}},
		{"named port out of range", func(in *catalogpb.Instance) { in.Ports = map[string]int32{"grpc": 70000} }, registry.ErrInvalidArgument, []string{"instance.ports[\"grpc\"]", "1..65535", "70000"}},
		{"bad port name", func(in *catalogpb.Instance) { in.Ports = map[string]int32{"a b": 80} }, registry.ErrInvalidArgument, []string{"instance.ports name", "\"a b\""}},
		{"too many tags", func(in *catalogpb.Instance) { in.Tags = strings.Split(strings.Repeat("t,", 64)+"t", ",") }, registry.ErrInvalidArgument, []string{"instance.tags", "at most 64", "65"}},
		{"long tag", func(in *catalogpb.Instance) { in.Tags = []string{strings.Repeat("t", 129)} }, registry.ErrInvalidArgument, []string{"instance.tags[0]", "1..128", "129"}},
		{"too much metadata", func(in *catalogpb.Instance) { in.Metadata = many(65) }, registry.ErrInvalidArgument, []string{"instance.metadata", "at most 64 pairs"}},
		{"long metadata key", func(in *catalogpb.Instance) { in.Metadata = map[string]string{strings.Repeat("k", 129): ""} }, registry.ErrInvalidArgument, []string{"instance.metadata key", "1..128"}},
		{"long metadata value", func(in *catalogpb.Instance) { in.Metadata = map[string]string{"k": strings.Repeat("v", 513)} }, registry.ErrInvalidArgument, []string{"instance.metadata value", "512"}},
		{"long zone", func(in *catalogpb.Instance) { in.Zone = strings.Repeat("z", 65) }, registry.ErrInvalidArgument, []string{"instance.zone", "64"}},
		{"weight too big", func(in *catalogpb.Instance) { in.Weight = 1001 }, registry.ErrInvalidArgument, []string{"instance.weight", "0..1000"}},
		{"negative weight", func(in *catalogpb.Instance) { in.Weight = -1 }, registry.ErrInvalidArgument, []string{"instance.weight"}},
		{"unknown state", func(in *catalogpb.Instance) { in.State = 9 }, registry.ErrInvalidArgument, []string{"instance.state", "STATE_SERVING", "9"}},
		{"negative lease", func(in *catalogpb.Instance) { in.Lease = -1 }, registry.ErrInvalidArgument, []string{"instance.lease"}},
		{"unknown lease", func(in *catalogpb.Instance) { in.Lease = 99 }, lease.ErrNotFound, []string{"instance.lease 99"}},
		{"check with no target", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{} }, registry.ErrInvalidArgument, []string{"exactly one of http, tcp and grpc", "got 0"}},
		{"check with two targets", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Http: "http://h/", Tcp: "h:1"} }, registry.ErrInvalidArgument, []string{"exactly one", "got 2"}},
		{"check url scheme", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Http: "ftp://h/x"} }, registry.ErrInvalidArgument, []string{"instance.check.http", "http:// or https://"}},
		{"check url unparsable", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Http: "http://[::1"} }, registry.ErrInvalidArgument, []string{"instance.check.http"}},
		{"check tcp address", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Tcp: "nohost"} }, registry.ErrInvalidArgument, []string{"instance.check.tcp", "host:port"}},
		{"check grpc address", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Grpc: "h:0"} }, registry.ErrInvalidArgument, []string{"instance.check.grpc port"}},
		{"grpc_service without grpc", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Tcp: "h:1", GrpcService: "x"} }, registry.ErrInvalidArgument, []string{"grpc_service"}},
		{"interval too short", func(in *catalogpb.Instance) { in.Check = &catalogpb.HealthCheck{Tcp: "h:1", IntervalMs: 999} }, registry.ErrInvalidArgument, []string{"instance.check.interval_ms", "1000..", "999"}},
		{"timeout above interval", func(in *catalogpb.Instance) {
			in.Check = &catalogpb.HealthCheck{Tcp: "h:1", IntervalMs: 2000, TimeoutMs: 2001}
		}, registry.ErrInvalidArgument, []string{"instance.check.timeout_ms", "2000", "2001"}},
		{"failures threshold", func(in *catalogpb.Instance) {
			in.Check = &catalogpb.HealthCheck{Tcp: "h:1", FailuresBeforeCritical: 11}
		}, registry.ErrInvalidArgument, []string{"failures_before_critical", "1..10"}},
		{"successes threshold", func(in *catalogpb.Instance) {
			in.Check = &catalogpb.HealthCheck{Tcp: "h:1", SuccessesBeforePassing: -1}
		}, registry.ErrInvalidArgument, []string{"successes_before_passing", "1..10"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := inst("orders", "a")
			in.Tags = []string{"changed"}
			tc.mutate(in)
			_, evs, err := s.register(in)
			wantErr(t, err, tc.target, tc.want...)
			if len(evs) != 0 {
				t.Errorf("refused register returned events %v", eventSummary(evs))
			}
		})
	}
	_, _, err := s.register(nil)
	wantErr(t, err, registry.ErrInvalidArgument, "instance is missing")
	s.unchanged(before, rev)
}

func TestRegisterAcceptsEdgeValues(t *testing.T) {
	s := newRegStore(t)
	for _, in := range []*catalogpb.Instance{
		{Service: "a", Id: "A.b_c:d-1", Address: "[::1]:65535"},
		{Service: "a", Id: strings.Repeat("x", 128), Address: "host.example.com:1", Weight: 1000},
		{Service: "a", Id: "grpc", Address: "h:1", Check: &catalogpb.HealthCheck{Grpc: "h:1", GrpcService: "pkg.Svc", IntervalMs: 1000}},
		{Service: "a", Id: "https", Address: "h:1", Check: &catalogpb.HealthCheck{Http: "https://h:8443/healthz?x=1", IntervalMs: 3000, TimeoutMs: 3000, FailuresBeforeCritical: 10, SuccessesBeforePassing: 1}},
	} {
		if _, _, err := s.register(in); err != nil {
			t.Errorf("register %s refused: %v", in.Id, err)
		}
	}
	got, err := s.getInstance("a", "grpc")
	if err != nil {
		t.Fatal(err)
	}
	if got.Check.TimeoutMs != 1000 {
		t.Errorf("default timeout with a 1000 ms interval = %d, want 1000 (never above the interval)", got.Check.TimeoutMs)
	}
}

func TestRegisterAttachesAndMovesLeases(t *testing.T) {
	s := newRegStore(t)
	s.grant(1)
	s.grant(2)
	in := inst("orders", "a")
	in.Lease = 1
	s.mustRegister(in)
	if items := s.leaseItems(1); len(items) != 1 || items[0] != "instance:orders/a" {
		t.Fatalf("lease 1 items = %v, want [instance:orders/a]", items)
	}

	in.Lease = 2
	got := s.mustRegister(in)
	if got.Lease != 2 {
		t.Errorf("lease = %d, want 2", got.Lease)
	}
	if items := s.leaseItems(1); len(items) != 0 {
		t.Errorf("old lease 1 still holds %v", items)
	}
	if items := s.leaseItems(2); len(items) != 1 {
		t.Errorf("lease 2 items = %v, want the instance", items)
	}

	// A revoke of the old lease leaves the instance alone.
	var evs []*catalogpb.Event
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		evs, ok, err := registry.DeleteLeased(tx, rev, 1, &catalogpb.LeaseItem{Kind: registry.InstanceKind, Key: "orders/a"})
		if !ok {
			t.Error("DeleteLeased does not own instance items")
		}
		return evs, err
	})
	if err != nil || len(evs) != 0 {
		t.Fatalf("stale lease item deleted: events %v, err %v", eventSummary(evs), err)
	}

	in.Lease = 0
	s.mustRegister(in)
	if items := s.leaseItems(2); len(items) != 0 {
		t.Errorf("lease 2 still holds %v after the instance dropped its lease", items)
	}
}

func TestLeaseRevokeDeletesInstance(t *testing.T) {
	s := newRegStore(t)
	s.grant(5)
	in := inst("orders", "a")
	in.Lease = 5
	reg := s.mustRegister(in)
	s.mustRegister(inst("orders", "b"))

	revoke := func() []*catalogpb.Event {
		t.Helper()
		evs, err := s.apply(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
			items, err := lease.Items(tx, 5)
			if err != nil {
				return nil, err
			}
			var all []*catalogpb.Event
			for _, it := range items {
				evs, _, err := registry.DeleteLeased(tx, rev, 5, it)
				if err != nil {
					return nil, err
				}
				all = append(all, evs...)
			}
			return all, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	evs := revoke()
	wantEvents(t, evs, "DELETE instance orders/a")
	protoEqual(t, "deleted instance", evs[0].PrevInstance, reg)
	if _, err := s.getInstance("orders", "a"); err == nil {
		t.Error("instance of the revoked lease survived")
	}
	if _, err := s.getInstance("orders", "b"); err != nil {
		t.Errorf("instance without a lease was touched: %v", err)
	}
	// The item is gone already: a second pass finds nothing.
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		evs, _, err := registry.DeleteLeased(tx, rev, 5, &catalogpb.LeaseItem{Kind: registry.InstanceKind, Key: "orders/a"})
		return evs, err
	})
	if err != nil || len(evs) != 0 {
		t.Errorf("deleting a gone instance: events %v, err %v; want none", eventSummary(evs), err)
	}
}

func TestDeregister(t *testing.T) {
	s := newRegStore(t)
	s.grant(3)
	in := inst("orders", "a")
	in.Lease = 3
	reg := s.mustRegister(in)
	resp, evs, err := s.deregister("orders", "a")
	if err != nil || !resp.Deleted {
		t.Fatalf("deregister: %v, deleted %v", err, resp.GetDeleted())
	}
	wantEvents(t, evs, "DELETE instance orders/a")
	if ev := evs[0]; ev.Instance != nil || ev.PrevKv.CreateRevision != reg.CreateRevision {
		t.Errorf("delete event = %v, want no item and the previous revisions", ev)
	}
	protoEqual(t, "deleted instance", evs[0].PrevInstance, reg)
	if items := s.leaseItems(3); len(items) != 0 {
		t.Errorf("lease 3 still holds %v", items)
	}
	rev := s.rev
	resp, evs, err = s.deregister("orders", "a")
	if err != nil || resp.Deleted || len(evs) != 0 || s.rev != rev {
		t.Errorf("second deregister: deleted %v, %d events, err %v; want false, none, nil", resp.GetDeleted(), len(evs), err)
	}
	resp, _, err = s.deregister("nope", "a")
	if err != nil || resp.Deleted {
		t.Errorf("deregister in unknown service: deleted %v, err %v; want false, nil", resp.GetDeleted(), err)
	}
	_, _, err = s.deregister("orders", "")
	wantErr(t, err, registry.ErrInvalidArgument, "id")
	// The service stays.
	if _, err := s.getService(&catalogpb.GetServiceRequest{Name: "orders"}); err != nil {
		t.Errorf("service went with its last instance: %v", err)
	}
}

func TestSetState(t *testing.T) {
	s := newRegStore(t)
	s.mustRegister(inst("orders", "a"))
	resp, evs, err := s.setState("orders", "a", catalogpb.InstanceState_STATE_DRAINING)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT instance orders/a")
	if resp.Instance.State != catalogpb.InstanceState_STATE_DRAINING || resp.Instance.ModRevision != s.rev || evs[0].PrevInstance.State != catalogpb.InstanceState_STATE_SERVING {
		t.Errorf("set state: %v, prev %v", resp.Instance, evs[0].PrevInstance)
	}
	rev := s.rev
	if _, evs, err := s.setState("orders", "a", catalogpb.InstanceState_STATE_DRAINING); err != nil || len(evs) != 0 || s.rev != rev {
		t.Errorf("same state again: %d events, err %v; want none", len(evs), err)
	}
	before := s.dump()
	_, _, err = s.setState("orders", "zz", catalogpb.InstanceState_STATE_STOPPED)
	wantErr(t, err, registry.ErrInstanceNotFound, "\"zz\"", "\"orders\"")
	_, _, err = s.setState("nope", "a", catalogpb.InstanceState_STATE_STOPPED)
	wantErr(t, err, registry.ErrServiceNotFound, "\"nope\"")
	_, _, err = s.setState("orders", "a", catalogpb.InstanceState_STATE_UNSPECIFIED)
	wantErr(t, err, registry.ErrInvalidArgument, "state must be STATE_STARTING, STATE_SERVING, STATE_DRAINING or STATE_STOPPED")
	_, _, err = s.setState("orders", "a", 17)
	wantErr(t, err, registry.ErrInvalidArgument, "17")
	s.unchanged(before, rev)
}

func TestSetHealth(t *testing.T) {
	s := newRegStore(t)
	created := s.mustRegister(inst("orders", "a"))
	sh := func(req *catalogpb.SetHealthRequest) (*catalogpb.Instance, []*catalogpb.Event) {
		t.Helper()
		req.Service, req.Id = "orders", "a"
		resp, evs, err := s.setHealth(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Instance, evs
	}

	s.now += 10
	got, evs := sh(&catalogpb.SetHealthRequest{Health: catalogpb.HealthStatus_WARNING, Output: "slow"})
	wantEvents(t, evs, "PUT instance orders/a")
	if got.Health != catalogpb.HealthStatus_WARNING || got.HealthOutput != "slow" || got.HealthChangedUnixNano != s.now || got.ModRevision != s.rev {
		t.Errorf("set WARNING: %v", got)
	}
	if evs[0].PrevInstance.Health != catalogpb.HealthStatus_PASSING || evs[0].PrevInstance.HealthChangedUnixNano != created.HealthChangedUnixNano {
		t.Errorf("event's previous instance = %v", evs[0].PrevInstance)
	}
	changedAt := s.now

	// The output alone changes: an event, but the health did not change.
	s.now += 10
	got, evs = sh(&catalogpb.SetHealthRequest{Health: catalogpb.HealthStatus_WARNING, Output: "slower"})
	if len(evs) != 1 || got.HealthOutput != "slower" || got.HealthChangedUnixNano != changedAt {
		t.Errorf("output change: %d events, %v; want 1 event, changed time kept at %d", len(evs), got, changedAt)
	}

	// Nothing changes: no events.
	rev := s.rev
	if _, evs = sh(&catalogpb.SetHealthRequest{Health: catalogpb.HealthStatus_WARNING, Output: "slower"}); len(evs) != 0 || s.rev != rev {
		t.Errorf("same health and output: %d events, want none", len(evs))
	}

	// if_health that no longer holds: dropped, without error.
	before := s.dump()
	got, evs = sh(&catalogpb.SetHealthRequest{Health: catalogpb.HealthStatus_CRITICAL, IfHealth: catalogpb.HealthStatus_PASSING})
	if len(evs) != 0 || got.Health != catalogpb.HealthStatus_WARNING {
		t.Errorf("stale if_health applied: %d events, health %s", len(evs), got.Health)
	}
	s.unchanged(before, rev)

	// if_health that holds: applied.
	s.now += 10
	got, evs = sh(&catalogpb.SetHealthRequest{Health: catalogpb.HealthStatus_CRITICAL, Output: "down", IfHealth: catalogpb.HealthStatus_WARNING})
	if len(evs) != 1 || got.Health != catalogpb.HealthStatus_CRITICAL || got.HealthChangedUnixNano != s.now {
		t.Errorf("if_health holding: %d events, %v", len(evs), got)
	}

	before, rev = s.dump(), s.rev
	for _, tc := range []struct {
		req  *catalogpb.SetHealthRequest
		err  error
		want string
	}{
		{&catalogpb.SetHealthRequest{Service: "orders", Id: "a"}, registry.ErrInvalidArgument, "health must be PASSING, WARNING or CRITICAL"},
		{&catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: 5}, registry.ErrInvalidArgument, "health must be"},
		{&catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: catalogpb.HealthStatus_PASSING, IfHealth: 8}, registry.ErrInvalidArgument, "if_health"},
		{&catalogpb.SetHealthRequest{Service: "orders", Id: "a", Health: catalogpb.HealthStatus_PASSING, Output: strings.Repeat("o", 4097)}, registry.ErrInvalidArgument, "output must be at most 4096"},
		{&catalogpb.SetHealthRequest{Service: "orders", Id: "b", Health: catalogpb.HealthStatus_PASSING}, registry.ErrInstanceNotFound, "\"b\""},
		{&catalogpb.SetHealthRequest{Service: "other", Id: "a", Health: catalogpb.HealthStatus_PASSING}, registry.ErrServiceNotFound, "\"other\""},
	} {
		_, _, err := s.setHealth(tc.req)
		wantErr(t, err, tc.err, tc.want)
	}
	s.unchanged(before, rev)
}

func TestGetServiceFiltersAndPages(t *testing.T) {
	s := newRegStore(t)
	type spec struct {
		id, zone string
		tags     []string
		md       map[string]string
		health   catalogpb.HealthStatus
		state    catalogpb.InstanceState
	}
	P, W, C := catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING, catalogpb.HealthStatus_CRITICAL
	SERVING, DRAINING := catalogpb.InstanceState_STATE_SERVING, catalogpb.InstanceState_STATE_DRAINING
	specs := []spec{
		{"i1", "z1", []string{"a", "b"}, map[string]string{"v": "1"}, P, SERVING},
		{"i2", "z1", []string{"a"}, map[string]string{"v": "2"}, W, SERVING},
		{"i3", "z2", []string{"b"}, map[string]string{"v": "1", "x": "y"}, C, SERVING},
		{"i4", "z2", []string{"a", "b"}, nil, P, DRAINING},
		{"i5", "z1", nil, map[string]string{"v": "1"}, P, SERVING},
	}
	for _, sp := range specs {
		s.mustRegister(&catalogpb.Instance{Service: "orders", Id: sp.id, Address: "h:1", Zone: sp.zone, Tags: sp.tags, Metadata: sp.md})
		s.setHealth(&catalogpb.SetHealthRequest{Service: "orders", Id: sp.id, Health: sp.health})
		s.setState("orders", sp.id, sp.state)
	}
	s.mustRegister(inst("orders-x", "i0")) // a service whose name extends "orders"

	ids := func(req *catalogpb.GetServiceRequest) (string, int64, bool) {
		t.Helper()
		req.Name = "orders"
		resp, err := s.getService(req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range resp.Instances {
			out = append(out, in.Id)
		}
		return strings.Join(out, ","), resp.Count, resp.More
	}
	for _, tc := range []struct {
		name   string
		filter *catalogpb.InstanceFilter
		want   string
	}{
		{"none", nil, "i1,i2,i3,i4,i5"},
		{"healthy", &catalogpb.InstanceFilter{Healthy: true}, "i1,i2,i5"},
		{"health critical or warning", &catalogpb.InstanceFilter{Health: []catalogpb.HealthStatus{C, W}}, "i2,i3"},
		{"state draining", &catalogpb.InstanceFilter{State: []catalogpb.InstanceState{DRAINING}}, "i4"},
		{"tags a and b", &catalogpb.InstanceFilter{Tags: []string{"a", "b"}}, "i1,i4"},
		{"zone z1", &catalogpb.InstanceFilter{Zone: "z1"}, "i1,i2,i5"},
		{"metadata v=1", &catalogpb.InstanceFilter{Metadata: map[string]string{"v": "1"}}, "i1,i3,i5"},
		{"metadata v=1 x=y", &catalogpb.InstanceFilter{Metadata: map[string]string{"v": "1", "x": "y"}}, "i3"},
		{"healthy in z1 tagged a", &catalogpb.InstanceFilter{Healthy: true, Zone: "z1", Tags: []string{"a"}}, "i1,i2"},
		{"nothing matches", &catalogpb.InstanceFilter{Zone: "z9"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, count, more := ids(&catalogpb.GetServiceRequest{Filter: tc.filter})
			wantCount := int64(len(strings.Split(tc.want, ",")))
			if tc.want == "" {
				wantCount = 0
			}
			if got != tc.want || count != wantCount || more {
				t.Errorf("instances = %q (count %d, more %v), want %q (count %d)", got, count, more, tc.want, wantCount)
			}
		})
	}

	// Pages, unfiltered and filtered: count is the whole match, every page.
	for _, tc := range []struct {
		filter     *catalogpb.InstanceFilter
		limit      int64
		after      string
		want       string
		count      int64
		wantMore   bool
		filterName string
	}{
		{nil, 2, "", "i1,i2", 5, true, "none"},
		{nil, 2, "i2", "i3,i4", 5, true, "none"},
		{nil, 2, "i4", "i5", 5, false, "none"},
		{nil, 0, "i5", "", 5, false, "none"},
		{&catalogpb.InstanceFilter{Zone: "z1"}, 2, "", "i1,i2", 3, true, "z1"},
		{&catalogpb.InstanceFilter{Zone: "z1"}, 2, "i2", "i5", 3, false, "z1"},
		{&catalogpb.InstanceFilter{Zone: "z1"}, 1, "i1", "i2", 3, true, "z1"},
		{&catalogpb.InstanceFilter{Zone: "z2"}, 1, "i3", "i4", 2, false, "z2"},
	} {
		got, count, more := ids(&catalogpb.GetServiceRequest{Filter: tc.filter, Limit: tc.limit, After: tc.after})
		if got != tc.want || count != tc.count || more != tc.wantMore {
			t.Errorf("filter %s limit %d after %q: %q count %d more %v; want %q count %d more %v",
				tc.filterName, tc.limit, tc.after, got, count, more, tc.want, tc.count, tc.wantMore)
		}
	}

	for _, tc := range []struct {
		req  *catalogpb.GetServiceRequest
		err  error
		want string
	}{
		{&catalogpb.GetServiceRequest{Name: "nope"}, registry.ErrServiceNotFound, "\"nope\""},
		{&catalogpb.GetServiceRequest{Name: ""}, registry.ErrInvalidArgument, "name must be 1..63"},
		{&catalogpb.GetServiceRequest{Name: "orders", Limit: 10001}, registry.ErrInvalidLimit, "0..10000"},
		{&catalogpb.GetServiceRequest{Name: "orders", Filter: &catalogpb.InstanceFilter{Health: []catalogpb.HealthStatus{0}}}, registry.ErrInvalidArgument, "filter.health[0]"},
		{&catalogpb.GetServiceRequest{Name: "orders", Filter: &catalogpb.InstanceFilter{State: []catalogpb.InstanceState{SERVING, 12}}}, registry.ErrInvalidArgument, "filter.state[1]"},
		{&catalogpb.GetServiceRequest{Name: "orders", Consistency: 3}, registry.ErrInvalidArgument, "consistency"},
	} {
		_, err := s.getService(tc.req)
		wantErr(t, err, tc.err, tc.want)
	}
	if _, err := s.getInstance("orders", "i9"); err == nil {
		t.Error("unknown instance found")
	} else {
		wantErr(t, err, registry.ErrInstanceNotFound, "\"i9\"")
	}
	if _, err := s.getInstance("zzz", "i1"); err == nil {
		t.Error("instance of unknown service found")
	} else {
		wantErr(t, err, registry.ErrServiceNotFound)
	}
}

func TestMatchInstance(t *testing.T) {
	in := &catalogpb.Instance{
		Health: catalogpb.HealthStatus_WARNING, State: catalogpb.InstanceState_STATE_SERVING,
		Tags: []string{"a", "b"}, Zone: "z", Metadata: map[string]string{"k": "v", "e": ""},
	}
	for _, tc := range []struct {
		f    *catalogpb.InstanceFilter
		want bool
	}{
		{nil, true},
		{&catalogpb.InstanceFilter{}, true},
		{&catalogpb.InstanceFilter{Healthy: true}, true},
		{&catalogpb.InstanceFilter{Health: []catalogpb.HealthStatus{catalogpb.HealthStatus_PASSING}}, false},
		{&catalogpb.InstanceFilter{Tags: []string{"b"}}, true},
		{&catalogpb.InstanceFilter{Tags: []string{"b", "c"}}, false},
		{&catalogpb.InstanceFilter{Zone: "y"}, false},
		{&catalogpb.InstanceFilter{Metadata: map[string]string{"e": ""}}, true},
		{&catalogpb.InstanceFilter{Metadata: map[string]string{"missing": ""}}, false},
		{&catalogpb.InstanceFilter{Metadata: map[string]string{"k": "w"}}, false},
		{&catalogpb.InstanceFilter{State: []catalogpb.InstanceState{catalogpb.InstanceState_STATE_DRAINING}}, false},
	} {
		if got := registry.MatchInstance(tc.f, in); got != tc.want {
			t.Errorf("MatchInstance(%v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	critical := proto.CloneOf(in)
	critical.Health = catalogpb.HealthStatus_CRITICAL
	draining := proto.CloneOf(in)
	draining.State = catalogpb.InstanceState_STATE_DRAINING
	for _, x := range []*catalogpb.Instance{critical, draining} {
		if registry.MatchInstance(&catalogpb.InstanceFilter{Healthy: true}, x) {
			t.Errorf("healthy matched %s %s", x.Health, x.State)
		}
	}
}

// TestStoredBytesAreDeterministic registers the same instance, maps and all,
// in two stores: every member must write the same bytes.
func TestStoredBytesAreDeterministic(t *testing.T) {
	md := map[string]string{}
	ports := map[string]int32{}
	for i := range 40 {
		md[fmt.Sprintf("key-%d", i)] = fmt.Sprint(i)
		ports[fmt.Sprintf("p%d", i)] = int32(1000 + i)
	}
	var raws [][]byte
	for range 2 {
		s := newRegStore(t)
		s.mustRegister(&catalogpb.Instance{Service: "orders", Id: "a", Address: "h:1", Metadata: md, Ports: ports})
		s.putService(&catalogpb.Service{Name: "orders", Metadata: md})
		d := s.dump()
		raws = append(raws, []byte(d["instances|orders\x00a"]+d["services|orders"]))
	}
	if len(raws[0]) == 0 || !bytes.Equal(raws[0], raws[1]) {
		t.Error("the same instance and service were stored as different bytes")
	}
}
