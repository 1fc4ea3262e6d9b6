package registry_test

import (
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

func TestPutServiceCreatesUpdatesAndKeepsCreateRevision(t *testing.T) {
	s := newRegStore(t)
	resp, evs, err := s.putService(&catalogpb.Service{Name: "orders", Description: "v1", Tags: []string{"web"}, Metadata: map[string]string{"team": "a"}, Owner: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT service orders")
	if got := resp.Service; got.CreateRevision != 1 || got.ModRevision != 1 || got.Owner != "ann" {
		t.Fatalf("created service = %v, want create and mod revision 1", got)
	}
	if evs[0].Kv.CreateRevision != 1 || evs[0].PrevService != nil || evs[0].PrevKv != nil {
		t.Errorf("create event = %v, want create revision 1 and no previous item", evs[0])
	}
	protoEqual(t, "event service", evs[0].Service, resp.Service)

	resp, evs, err = s.putService(&catalogpb.Service{Name: "orders", Description: "v2", Tags: []string{"web"}, Metadata: map[string]string{"team": "a"}, Owner: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT service orders")
	if got := resp.Service; got.CreateRevision != 1 || got.ModRevision != 2 || got.Description != "v2" {
		t.Fatalf("updated service = %v, want create revision 1, mod revision 2, description v2", got)
	}
	if ev := evs[0]; ev.PrevService.GetDescription() != "v1" || ev.PrevKv.GetModRevision() != 1 || ev.Kv.CreateRevision != 1 {
		t.Errorf("update event = %v, want the previous service (v1, mod 1) and create revision 1", ev)
	}

	// The same content again changes nothing: no events, no revision.
	resp, evs, err = s.putService(&catalogpb.Service{Name: "orders", Description: "v2", Tags: []string{"web"}, Metadata: map[string]string{"team": "a"}, Owner: "ann", CreateRevision: 99})
	if err != nil || len(evs) != 0 || s.rev != 2 {
		t.Fatalf("identical put: events %d, err %v, revision %d; want none, nil, 2", len(evs), err, s.rev)
	}
	if resp.Service.ModRevision != 2 || resp.Service.CreateRevision != 1 {
		t.Errorf("identical put returned %v, want the stored service", resp.Service)
	}
}

func TestServiceNameRules(t *testing.T) {
	s := newRegStore(t)
	for _, good := range []string{"a", "orders", "orders-v2", "0", strings.Repeat("a", 63)} {
		if _, _, err := s.putService(&catalogpb.Service{Name: good}); err != nil {
			t.Errorf("name %q refused: %v", good, err)
		}
	}
	before, rev := s.dump(), s.rev
	for _, bad := range []string{"", strings.Repeat("a", 64), "Orders", "-orders", "orders-", "or_ders", "or/ders", "orders\x00", "ordérs"} {
		_, evs, err := s.putService(&catalogpb.Service{Name: bad})
		wantErr(t, err, registry.ErrInvalidArgument, "service.name", "1..63", "a-z, 0-9 and '-'")
		if len(evs) != 0 {
			t.Errorf("name %q: refused put returned events", bad)
		}
	}
	s.unchanged(before, rev)
}

func TestPutServiceRefusesBadFields(t *testing.T) {
	s := newRegStore(t)
	s.putService(&catalogpb.Service{Name: "orders", Description: "kept"})
	before, rev := s.dump(), s.rev
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprintf("k%02d", i)] = "v"
	}
	cases := []struct {
		name string
		svc  *catalogpb.Service
		want []string
	}{
		{"missing", nil, []string{"service is missing"}},
		{"long description", &catalogpb.Service{Name: "orders", Description: strings.Repeat("x", 1025)}, []string{"service.description", "1024"}},
		{"long owner", &catalogpb.Service{Name: "orders", Owner: strings.Repeat("x", 257)}, []string{"service.owner", "256"}},
		{"empty tag", &catalogpb.Service{Name: "orders", Tags: []string{"a", ""}}, []string{"service.tags[1]", "1..128"}},
		{"too many tags", &catalogpb.Service{Name: "orders", Tags: make([]string, 65)}, []string{"service.tags", "at most 64"}},
		{"too many metadata", &catalogpb.Service{Name: "orders", Metadata: many}, []string{"service.metadata", "at most 64 pairs"}},
		{"long metadata value", &catalogpb.Service{Name: "orders", Metadata: map[string]string{"k": strings.Repeat("v", 513)}}, []string{"service.metadata", "\"k\"", "512"}},
		{"empty metadata key", &catalogpb.Service{Name: "orders", Metadata: map[string]string{"": "v"}}, []string{"service.metadata key", "1..128"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.putService(tc.svc)
			wantErr(t, err, registry.ErrInvalidArgument, tc.want...)
		})
	}
	s.unchanged(before, rev)
}

func TestDeleteService(t *testing.T) {
	s := newRegStore(t)
	s.grant(7)
	a := inst("orders", "a")
	a.Lease = 7
	s.mustRegister(a)
	s.mustRegister(inst("orders", "b"))
	s.mustRegister(inst("billing", "x"))
	if _, _, err := s.setShardMap(&catalogpb.ShardMap{Service: "orders", Shards: []*catalogpb.Shard{{Id: "s1", Replicas: []string{"a"}}}}, 0); err != nil {
		t.Fatal(err)
	}

	before, rev := s.dump(), s.rev
	_, _, err := s.deleteService("orders", false)
	wantErr(t, err, registry.ErrServiceNotEmpty, "\"orders\"", "2 instances", "force")
	_, _, err = s.deleteService("nope", true)
	wantErr(t, err, registry.ErrServiceNotFound, "\"nope\"")
	_, _, err = s.deleteService("Bad", true)
	wantErr(t, err, registry.ErrInvalidArgument, "name")
	s.unchanged(before, rev)

	resp, evs, err := s.deleteService("orders", true)
	if err != nil {
		t.Fatal(err)
	}
	if resp.DeletedInstances != 2 {
		t.Errorf("deleted_instances = %d, want 2", resp.DeletedInstances)
	}
	wantEvents(t, evs, "DELETE instance orders/a", "DELETE instance orders/b", "DELETE shard_map orders", "DELETE service orders")
	if s.rev != rev+1 {
		t.Errorf("revision = %d, want %d: a delete is one revision", s.rev, rev+1)
	}
	for _, ev := range evs {
		if ev.PrevKv == nil || ev.PrevKv.CreateRevision == 0 {
			t.Errorf("event %s %s lacks the previous item's revisions", ev.Kind, ev.Kv.Key)
		}
	}
	if evs[0].PrevInstance.GetId() != "a" || evs[2].PrevShardMap.GetEpoch() != 1 || evs[3].PrevService.GetName() != "orders" {
		t.Errorf("delete events lack their previous items: %v", evs)
	}
	if items := s.leaseItems(7); len(items) != 0 {
		t.Errorf("lease 7 still holds %v after its instance was deleted", items)
	}
	if _, err := s.getInstance("orders", "a"); err == nil {
		t.Error("instance orders/a survived its service")
	}
	if _, err := s.getService(&catalogpb.GetServiceRequest{Name: "billing"}); err != nil {
		t.Errorf("another service was touched: %v", err)
	}

	// An empty service goes without force.
	s.putService(&catalogpb.Service{Name: "empty"})
	_, evs, err = s.deleteService("empty", false)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "DELETE service empty")
}

func TestListServices(t *testing.T) {
	s := newRegStore(t)
	s.putService(&catalogpb.Service{Name: "alpha", Tags: []string{"db"}})
	for i, h := range []catalogpb.HealthStatus{catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING, catalogpb.HealthStatus_CRITICAL, catalogpb.HealthStatus_CRITICAL} {
		id := fmt.Sprintf("i%d", i)
		s.mustRegister(inst("beta", id))
		if _, _, err := s.setHealth(&catalogpb.SetHealthRequest{Service: "beta", Id: id, Health: h}); err != nil {
			t.Fatal(err)
		}
	}
	s.setState("beta", "i0", catalogpb.InstanceState_STATE_DRAINING)
	s.mustRegister(inst("gamma", "g"))
	s.putService(&catalogpb.Service{Name: "gamma", Tags: []string{"db", "web"}})
	// A service whose name is a prefix of another's keeps its own counts.
	s.mustRegister(inst("beta-2", "x"))

	list := func(req *catalogpb.ListServicesRequest) *catalogpb.ListServicesResponse {
		t.Helper()
		var resp *catalogpb.ListServicesResponse
		s.view(func(tx *bbolt.Tx) (err error) {
			resp, err = registry.ListServices(tx, req)
			return err
		})
		return resp
	}
	names := func(resp *catalogpb.ListServicesResponse) string {
		var out []string
		for _, sum := range resp.Services {
			out = append(out, sum.Service.Name)
		}
		return strings.Join(out, ",")
	}

	all := list(&catalogpb.ListServicesRequest{})
	if got := names(all); got != "alpha,beta,beta-2,gamma" || all.More {
		t.Fatalf("services = %s (more %v), want alpha,beta,beta-2,gamma", got, all.More)
	}
	beta := all.Services[1]
	if beta.Instances != 4 || beta.Passing != 1 || beta.Warning != 1 || beta.Critical != 2 || beta.Serving != 3 {
		t.Errorf("beta summary = %v, want 4 instances: 1 passing, 1 warning, 2 critical, 3 serving", beta)
	}
	if all.Services[0].Instances != 0 || all.Services[2].Instances != 1 {
		t.Errorf("alpha / beta-2 counts = %d / %d, want 0 / 1", all.Services[0].Instances, all.Services[2].Instances)
	}

	page := list(&catalogpb.ListServicesRequest{Limit: 2})
	if got := names(page); got != "alpha,beta" || !page.More {
		t.Fatalf("page 1 = %s (more %v), want alpha,beta with more", got, page.More)
	}
	page = list(&catalogpb.ListServicesRequest{Limit: 2, After: "beta"})
	if got := names(page); got != "beta-2,gamma" || page.More {
		t.Fatalf("page 2 = %s (more %v), want beta-2,gamma and no more", got, page.More)
	}
	if got := names(list(&catalogpb.ListServicesRequest{Tag: "db"})); got != "alpha,gamma" {
		t.Errorf("tag db = %s, want alpha,gamma", got)
	}
	if got := names(list(&catalogpb.ListServicesRequest{Tag: "db", Limit: 1, After: "alpha"})); got != "gamma" {
		t.Errorf("tag db after alpha = %s, want gamma", got)
	}

	s.view(func(tx *bbolt.Tx) error {
		_, err := registry.ListServices(tx, &catalogpb.ListServicesRequest{Limit: 10001})
		wantErr(t, err, registry.ErrInvalidLimit, "0..10000")
		_, err = registry.ListServices(tx, &catalogpb.ListServicesRequest{Limit: -1})
		wantErr(t, err, registry.ErrInvalidLimit)
		return nil
	})
}
