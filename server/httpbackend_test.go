package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// queryGraphQL posts query to s's HTTP address and decodes the answer.
func queryGraphQL(t *testing.T, s *Server, query string, data any) []struct {
	Message    string
	Extensions map[string]any
} {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": query})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.HTTPAddr()+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /graphql: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Data   json.RawMessage
		Errors []struct {
			Message    string
			Extensions map[string]any
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode graphql answer: %v", err)
	}
	if data != nil && len(out.Data) > 0 {
		if err := json.Unmarshal(out.Data, data); err != nil {
			t.Fatalf("decode data %s: %v", out.Data, err)
		}
	}
	return out.Errors
}

func TestGraphQLRegistryOnAServer(t *testing.T) {
	c := newTestCluster(t, 1)
	s := c.leader()
	rc := registryClient(t, s.ClientAddr())
	if _, err := rc.PutService(t.Context(), &catalogpb.PutServiceRequest{Service: &catalogpb.Service{
		Name: "orders", Description: "takes orders", Tags: []string{"prod"}, Metadata: map[string]string{"team": "shop"}, Owner: "shop",
	}}); err != nil {
		t.Fatal(err)
	}
	for i, zone := range []string{"a", "b"} {
		if _, err := rc.Register(t.Context(), &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{
			Service: "orders", Id: fmt.Sprintf("o-%d", i+1), Address: fmt.Sprintf("10.0.0.%d:80", i+1), Zone: zone,
			Ports: map[string]int32{"http": 8080},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rc.SetHealth(t.Context(), &catalogpb.SetHealthRequest{Service: "orders", Id: "o-2", Health: catalogpb.HealthStatus_CRITICAL, Output: "down"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.SetShardMap(t.Context(), &catalogpb.SetShardMapRequest{Map: &catalogpb.ShardMap{
		Service: "orders", TotalSlots: 4, Shards: []*catalogpb.Shard{{Id: "s1", Slots: []*catalogpb.SlotRange{{From: 0, To: 3}}, Replicas: []string{"o-1"}}},
	}}); err != nil {
		t.Fatal(err)
	}
	lc := leaseClient(t, s.ClientAddr())
	leaseID := grant(t, lc, 60)

	var data struct {
		Services []struct {
			Service           struct{ Name string }
			InstanceCount     int
			Passing, Critical int
		}
		Service struct {
			Name, Owner string
			Metadata    []struct{ Key, Value string }
			Healthy     []struct{ ID string }
			Critical    []struct {
				ID, HealthOutput string
				Ports            []struct {
					Name string
					Port int
				}
			}
			ShardMap struct {
				Epoch  string
				Shards []struct {
					ID       string
					Replicas []string
				}
			}
		}
		Instance struct{ ID, Zone, Health, State string }
		Missing  *struct{ Name string }
		Leases   []struct {
			ID  string
			TTL int
		}
	}
	errs := queryGraphQL(t, s, `{
		services { service { name } instanceCount passing critical }
		service(name: "orders") { name owner metadata { key value }
			healthy: instances(healthy: true) { id }
			critical: instances(health: [CRITICAL]) { id healthOutput ports { name port } }
			shardMap { epoch shards { id replicas } } }
		instance(service: "orders", id: "o-1") { id zone health state }
		missing: service(name: "nope") { name }
		leases { id ttl }
	}`, &data)
	if len(errs) > 0 {
		t.Fatalf("graphql errors: %+v", errs)
	}
	if len(data.Services) != 1 || data.Services[0].Service.Name != "orders" || data.Services[0].InstanceCount != 2 ||
		data.Services[0].Passing != 1 || data.Services[0].Critical != 1 {
		t.Errorf("services = %+v, want orders with 1 passing and 1 critical", data.Services)
	}
	svc := data.Service
	if svc.Name != "orders" || svc.Owner != "shop" || fmt.Sprint(svc.Metadata) != "[{team shop}]" {
		t.Errorf("service = %+v", svc)
	}
	if fmt.Sprint(svc.Healthy) != "[{o-1}]" || len(svc.Critical) != 1 || svc.Critical[0].ID != "o-2" || svc.Critical[0].HealthOutput != "down" ||
		fmt.Sprint(svc.Critical[0].Ports) != "[{http 8080}]" {
		t.Errorf("healthy %+v critical %+v, want o-1 and o-2 (down, port http 8080)", svc.Healthy, svc.Critical)
	}
	if svc.ShardMap.Epoch != "1" || len(svc.ShardMap.Shards) != 1 || fmt.Sprint(svc.ShardMap.Shards[0].Replicas) != "[o-1]" {
		t.Errorf("shardMap = %+v", svc.ShardMap)
	}
	if data.Instance.ID != "o-1" || data.Instance.Zone != "a" || data.Instance.Health != "PASSING" || data.Instance.State != "STATE_SERVING" {
		t.Errorf("instance = %+v", data.Instance)
	}
	if data.Missing != nil {
		t.Errorf("unknown service = %+v, want null", data.Missing)
	}
	if len(data.Leases) != 1 || data.Leases[0].ID != fmt.Sprint(leaseID) || data.Leases[0].TTL != 60 {
		t.Errorf("leases = %+v, want lease %d with TTL 60", data.Leases, leaseID)
	}

	// The server's own validation comes back as the field's error.
	errs = queryGraphQL(t, s, `{ service(name: "Bad_Name") { name } }`, nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "Bad_Name") || errs[0].Extensions["code"] != "InvalidArgument" {
		t.Fatalf("errors %+v, want the server's InvalidArgument naming the bad name", errs)
	}
}
