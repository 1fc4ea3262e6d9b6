package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/graphql-go/graphql"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/server/metrics"
)

func TestNewRequiresBackendAndMetrics(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no backend", Config{Metrics: metrics.New()}, "Config.Backend is nil"},
		{"no metrics", Config{Backend: newFakeBackend()}, "Config.Metrics is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewTwiceOnOneMetrics(t *testing.T) {
	m := metrics.New()
	for i := range 2 {
		if _, err := New(Config{Backend: newFakeBackend(), Metrics: m}); err != nil {
			t.Fatalf("New #%d on one Metrics: %v", i+1, err)
		}
	}
}

func TestProbes(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		ready    bool
		reason   string
		wantCode int
		wantBody string
	}{
		{"healthz while not ready", "/healthz", false, "no leader", http.StatusOK, "ok"},
		{"readyz ready", "/readyz", true, "", http.StatusOK, "ok"},
		{"readyz no leader", "/readyz", false, "no leader known", http.StatusServiceUnavailable, "no leader known"},
		{"readyz without a reason", "/readyz", false, "", http.StatusServiceUnavailable, "not ready"},
		{"readyz behind", "/readyz", false, "applied index 90 is behind commit index 100", http.StatusServiceUnavailable, "applied index 90 is behind commit index 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			b.ready, b.reason = tt.ready, tt.reason
			h, _ := newTestHandler(t, b)
			rec := serve(t, h, httptest.NewRequestWithContext(t.Context(), http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Fatalf("GET %s = %d %q, want %d %q", tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestRoutesRefuseOtherMethods(t *testing.T) {
	h, _ := newTestHandler(t, newFakeBackend())
	for _, target := range []string{"/healthz", "/readyz", "/metrics", "/graphql"} {
		t.Run(target, func(t *testing.T) {
			rec := serve(t, h, httptest.NewRequestWithContext(t.Context(), http.MethodPut, target, nil))
			if rec.Code != http.StatusMethodNotAllowed {
				t.Fatalf("PUT %s = %d, want 405", target, rec.Code)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	h, m := newTestHandler(t, newFakeBackend())
	m.IsLeader.Set(1)
	rec := serve(t, h, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", rec.Code)
	}
	for _, want := range []string{"\ncatalogd_server_is_leader 1\n", "\ncatalogd_mvcc_revision 0\n", "\ngo_goroutines "} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET /metrics body lacks %q", strings.TrimSpace(want))
		}
	}
}

func TestGraphQLCluster(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	var data struct {
		Cluster map[string]any
		Members []map[string]any
	}
	errs := postGraphQL(t, h, `{
		cluster { name dc version leader term commitIndex appliedIndex revision dbSize compactRevision
		          header { clusterId memberId revision raftTerm } }
		members { id name peerAddr clientAddr isLeader isLearner healthy matchIndex }
	}`, nil, &data)
	requireNoErrors(t, errs)

	wantCluster := map[string]any{
		"name": "n1", "dc": "dc1", "version": "0.2.0", "leader": "2", "term": "3",
		"commitIndex": "100", "appliedIndex": "99", "revision": "42", "dbSize": "5368709120", "compactRevision": "7",
		"header": map[string]any{"clusterId": "18364758544493064720", "memberId": "1", "revision": "42", "raftTerm": "3"},
	}
	if got, want := fmt.Sprint(data.Cluster), fmt.Sprint(wantCluster); got != want {
		t.Errorf("cluster = %s\nwant      %s", got, want)
	}
	if len(data.Members) != 3 {
		t.Fatalf("members = %v, want 3", data.Members)
	}
	wantLeader := map[string]any{
		"id": "2", "name": "n2", "peerAddr": "10.0.0.2:7401", "clientAddr": "10.0.0.2:7400",
		"isLeader": true, "isLearner": false, "healthy": true, "matchIndex": "100",
	}
	if got, want := fmt.Sprint(data.Members[1]), fmt.Sprint(wantLeader); got != want {
		t.Errorf("members[1] = %s\nwant         %s", got, want)
	}
	if data.Members[2]["isLearner"] != true || data.Members[2]["healthy"] != false {
		t.Errorf("members[2] = %v, want a learner that is not healthy", data.Members[2])
	}
	if b.statusCalls != 1 {
		t.Errorf("Backend.Status called %d times for cluster and members, want 1", b.statusCalls)
	}
}

func TestGraphQLKV(t *testing.T) {
	tests := []struct {
		name            string
		query           string
		wantKV          map[string]any // nil: want null
		wantConsistency catalogpb.Consistency
	}{
		{
			name:  "present, linearizable by default",
			query: `{ kv(key: "app/b") { key value valueBase64 createRevision modRevision version lease } }`,
			wantKV: map[string]any{
				"key": "app/b", "value": "v-app/b", "valueBase64": "di1hcHAvYg==",
				"createRevision": "11", "modRevision": "21", "version": "1", "lease": "0",
			},
			wantConsistency: catalogpb.Consistency_LINEARIZABLE,
		},
		{
			name:            "serializable",
			query:           `{ kv(key: "app/a", consistency: SERIALIZABLE) { key } }`,
			wantKV:          map[string]any{"key": "app/a"},
			wantConsistency: catalogpb.Consistency_SERIALIZABLE,
		},
		{
			name:            "missing is null",
			query:           `{ kv(key: "app/zzz") { key } }`,
			wantConsistency: catalogpb.Consistency_LINEARIZABLE,
		},
		{
			name:            "not a prefix read",
			query:           `{ kv(key: "app/") { key } }`,
			wantConsistency: catalogpb.Consistency_LINEARIZABLE,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			h, _ := newTestHandler(t, b)
			var data struct{ KV map[string]any }
			requireNoErrors(t, postGraphQL(t, h, tt.query, nil, &data))
			if fmt.Sprint(data.KV) != fmt.Sprint(tt.wantKV) {
				t.Errorf("kv = %v, want %v", data.KV, tt.wantKV)
			}
			gets := b.recordedGets()
			if len(gets) != 1 {
				t.Fatalf("Backend.Get called %d times, want 1", len(gets))
			}
			if gets[0].Consistency != tt.wantConsistency || gets[0].Prefix {
				t.Errorf("Backend.Get got consistency %v prefix %v, want %v and no prefix", gets[0].Consistency, gets[0].Prefix, tt.wantConsistency)
			}
		})
	}
}

type kvPage struct {
	Items []struct {
		Key   string
		Value string
	}
	More     bool
	Next     *string
	Count    int
	Revision string
}

func TestGraphQLKVRangePages(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	const query = `query Page($after: String) {
		kvRange(prefix: "app/", limit: 2, after: $after) { items { key value } more next count revision }
	}`
	var keys []string
	var after any // nil until the first page answered
	for pageNum := 1; ; pageNum++ {
		if pageNum > 10 {
			t.Fatalf("still paging after 10 pages; keys so far %v", keys)
		}
		var data struct{ KVRange kvPage }
		requireNoErrors(t, postGraphQL(t, h, query, map[string]any{"after": after}, &data))
		page := data.KVRange
		if page.Count != 5 || page.Revision != "42" {
			t.Errorf("page %d count %d revision %q, want 5 and \"42\"", pageNum, page.Count, page.Revision)
		}
		for _, item := range page.Items {
			if item.Value != "v-"+item.Key {
				t.Errorf("page %d item %s has value %q", pageNum, item.Key, item.Value)
			}
			keys = append(keys, item.Key)
		}
		if !page.More {
			if page.Next != nil {
				t.Errorf("last page has next %q, want null", *page.Next)
			}
			break
		}
		if page.Next == nil || len(page.Items) != 2 {
			t.Fatalf("page %d: more with next %v and %d items, want a next and 2 items", pageNum, page.Next, len(page.Items))
		}
		after = *page.Next
	}
	if got, want := strings.Join(keys, ","), "app/a,app/b,app/c,app/d,app/e"; got != want {
		t.Fatalf("paged keys %s, want %s", got, want)
	}
	for _, req := range b.recordedGets() {
		if !req.Prefix || string(req.Key) != "app/" || req.Limit != 2 || req.Consistency != catalogpb.Consistency_LINEARIZABLE {
			t.Errorf("Backend.Get got %v, want a linearizable prefix read of app/ with limit 2", req)
		}
	}
}

func TestGraphQLKVRangeDefaultsAndOptions(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	var data struct{ KVRange kvPage }
	requireNoErrors(t, getGraphQL(t, h, `{ kvRange(prefix: "app/", keysOnly: true, consistency: SERIALIZABLE) { items { key value } more } }`, &data))
	if len(data.KVRange.Items) != 5 || data.KVRange.More {
		t.Fatalf("kvRange = %+v, want all 5 keys on one page", data.KVRange)
	}
	if v := data.KVRange.Items[0].Value; v != "" {
		t.Errorf("keysOnly item has value %q, want none", v)
	}
	req := b.recordedGets()[0]
	if req.Limit != defaultRangeLimit || !req.KeysOnly || req.Consistency != catalogpb.Consistency_SERIALIZABLE || len(req.ContinueToken) != 0 {
		t.Errorf("Backend.Get got %v, want limit %d, keys only, serializable, no token", req, defaultRangeLimit)
	}
}

func TestGraphQLArgumentErrors(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantMsg    string
		wantReason string
	}{
		{"limit zero", `{ kvRange(prefix: "app/", limit: 0) { count } }`, "limit must be 1..10000, got 0", "INVALID_LIMIT"},
		{"limit negative", `{ kvRange(prefix: "app/", limit: -5) { count } }`, "limit must be 1..10000, got -5", "INVALID_LIMIT"},
		{"limit too large", `{ kvRange(prefix: "app/", limit: 10001) { count } }`, "limit must be 1..10000, got 10001", "INVALID_LIMIT"},
		{"after not base64", `{ kvRange(prefix: "app/", after: "%%%") { count } }`, `after must be the next value of an earlier kvRange page`, "INVALID_CONTINUE_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			h, _ := newTestHandler(t, b)
			errs := postGraphQL(t, h, tt.query, nil, nil)
			if len(errs) != 1 || !strings.Contains(errs[0].Message, tt.wantMsg) {
				t.Fatalf("errors %+v, want one containing %q", errs, tt.wantMsg)
			}
			if errs[0].Extensions["reason"] != tt.wantReason || errs[0].Extensions["code"] != "InvalidArgument" {
				t.Errorf("extensions %v, want reason %s code InvalidArgument", errs[0].Extensions, tt.wantReason)
			}
			if n := len(b.recordedGets()); n != 0 {
				t.Errorf("Backend.Get called %d times for invalid arguments, want 0", n)
			}
		})
	}
	t.Run("limit boundaries accepted", func(t *testing.T) {
		h, _ := newTestHandler(t, newFakeBackend())
		for _, limit := range []int{1, 10000} {
			requireNoErrors(t, postGraphQL(t, h, `query($l: Int) { kvRange(prefix: "app/", limit: $l) { count } }`, map[string]any{"l": limit}, nil))
		}
	})
}

func TestGraphQLQueryErrors(t *testing.T) {
	tests := []struct {
		name    string
		query   string
		wantMsg string
	}{
		{"unknown field", `{ nope }`, `Cannot query field "nope" on type "Query"`},
		{"unknown consistency", `{ kv(key: "a", consistency: EVENTUAL) { key } }`, `Argument "consistency" has invalid value EVENTUAL`},
		{"syntax", `{ cluster { name }`, "Syntax Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, newFakeBackend())
			errs := postGraphQL(t, h, tt.query, nil, nil)
			if len(errs) == 0 || !strings.Contains(errs[0].Message, tt.wantMsg) {
				t.Fatalf("errors %+v, want one containing %q", errs, tt.wantMsg)
			}
		})
	}
}

func TestGraphQLBackendErrors(t *testing.T) {
	noLeader, err := status.New(codes.Unavailable, "no leader elected yet; retry").WithDetails(&errdetails.ErrorInfo{
		Domain: "catalogd", Reason: catalogpb.ErrorReason_NO_LEADER.String(),
	})
	if err != nil {
		t.Fatalf("build status: %v", err)
	}
	tests := []struct {
		name     string
		err      error
		wantMsg  string
		wantCode string
		wantWhy  any // extensions.reason, nil when absent
	}{
		{"status with reason", noLeader.Err(), "no leader elected yet; retry", "Unavailable", "NO_LEADER"},
		{"wrapped status", fmt.Errorf("read: %w", status.Error(codes.OutOfRange, "revision 3 was compacted")), "revision 3 was compacted", "OutOfRange", nil},
		{"deadline", fmt.Errorf("wait for read index: %w", context.DeadlineExceeded), "wait for read index: context deadline exceeded", "DeadlineExceeded", nil},
		{"plain", errors.New("disk on fire"), "disk on fire", "Unknown", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			b.getErr, b.statusErr = tt.err, tt.err
			h, _ := newTestHandler(t, b)
			for _, query := range []string{`{ kv(key: "a") { key } }`, `{ kvRange(prefix: "a") { count } }`, `{ members { id } }`} {
				errs := postGraphQL(t, h, query, nil, nil)
				if len(errs) != 1 {
					t.Fatalf("%s: errors %+v, want 1", query, errs)
				}
				got := errs[0]
				if !strings.Contains(got.Message, tt.wantMsg) || got.Extensions["code"] != tt.wantCode || got.Extensions["reason"] != tt.wantWhy {
					t.Errorf("%s: error %+v, want message %q code %s reason %v", query, got, tt.wantMsg, tt.wantCode, tt.wantWhy)
				}
			}
		})
	}
}

func TestGraphQLRequestErrors(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		wantCode    int
		wantMsg     string
	}{
		{"malformed JSON", "POST", "/graphql", "application/json", `{"query": "{ cluster { name } }"`, 400, "body is not valid JSON"},
		{"syntax error in JSON", "POST", "/graphql", "application/json", `{"query": {cluster}}`, 400, "body is not valid JSON"},
		{"empty body", "POST", "/graphql", "application/json", ``, 400, "body is empty"},
		{"query not a string", "POST", "/graphql", "application/json", `{"query": 5}`, 400, "query must be a string, got a JSON number"},
		{"variables not an object", "POST", "/graphql", "application/json", `{"query": "{ cluster { name } }", "variables": "x"}`, 400, "variables must be an object, got a JSON string"},
		{"array body", "POST", "/graphql", "application/json", `[{"query": "{ cluster { name } }"}]`, 400, "body must be a JSON object"},
		{"two objects", "POST", "/graphql", "application/json", `{"query": "{ cluster { name } }"} {}`, 400, "exactly one JSON object"},
		{"no query", "POST", "/graphql", "application/json", `{"variables": {}}`, 400, "query is empty"},
		{"too large", "POST", "/graphql", "application/json", `{"query": "` + strings.Repeat(" ", maxBodyBytes) + `"}`, 413, "body must be at most 1048576 bytes"},
		{"form", "POST", "/graphql", "application/x-www-form-urlencoded", `query=x`, 415, "Content-Type must be application/json or application/graphql"},
		{"GET without query", "GET", "/graphql", "", ``, 400, "URL parameter query is required"},
		{"GET bad variables", "GET", "/graphql?query=" + url.QueryEscape("{ cluster { name } }") + "&variables=" + url.QueryEscape("{x"), "", ``, 400, "URL parameter variables must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, newFakeBackend())
			req := httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := serve(t, h, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			var resp gqlResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("body %q is not a JSON errors object: %v", rec.Body, err)
			}
			if len(resp.Errors) != 1 || !strings.Contains(resp.Errors[0].Message, tt.wantMsg) {
				t.Fatalf("errors %+v, want one containing %q", resp.Errors, tt.wantMsg)
			}
		})
	}
}

func TestGraphQLRawQueryBody(t *testing.T) {
	h, _ := newTestHandler(t, newFakeBackend())
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/graphql", strings.NewReader(`{ cluster { name } }`))
	req.Header.Set("Content-Type", "application/graphql")
	var data struct{ Cluster struct{ Name string } }
	requireNoErrors(t, decodeGraphQL(t, serve(t, h, req), &data))
	if data.Cluster.Name != "n1" {
		t.Fatalf("cluster.name = %q, want n1", data.Cluster.Name)
	}
}

func TestGraphQLOperationName(t *testing.T) {
	h, _ := newTestHandler(t, newFakeBackend())
	body := `{"query": "query A { cluster { name } } query B { cluster { dc } }", "operationName": "B"}`
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/graphql", strings.NewReader(body))
	var data struct{ Cluster map[string]string }
	requireNoErrors(t, decodeGraphQL(t, serve(t, h, req), &data))
	if fmt.Sprint(data.Cluster) != "map[dc:dc1]" {
		t.Fatalf("cluster = %v, want only dc (operation B)", data.Cluster)
	}
}

// TestGraphQLConcurrentRequests is meant for -race: the schema is shared by
// every request.
func TestGraphQLConcurrentRequests(t *testing.T) {
	h, _ := newTestHandler(t, newFakeBackend())
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			consistency := []string{"LINEARIZABLE", "SERIALIZABLE"}[i%2]
			query := `{ kv(key: "app/c", consistency: ` + consistency + `) { key } kvRange(prefix: "app/", limit: 1) { next } cluster { leader } }`
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/graphql", strings.NewReader(fmt.Sprintf(`{"query": %q}`, query)))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"key":"app/c"`) || strings.Contains(rec.Body.String(), `"errors"`) {
				errc <- fmt.Errorf("request %d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestSchemaRefusesDuplicateFields(t *testing.T) {
	saved := queryAreas
	t.Cleanup(func() { queryAreas = saved })
	queryAreas = append(queryAreas[:len(queryAreas):len(queryAreas)], queryArea{"kv again", func(b Backend, shared *sharedTypes) graphql.Fields {
		return graphql.Fields{"kv": &graphql.Field{Type: graphql.String}}
	}})
	_, err := Schema(newFakeBackend())
	if err == nil || !strings.Contains(err.Error(), `query field "kv" is defined by both the kv and the kv again area`) {
		t.Fatalf("Schema error = %v, want a duplicate kv field", err)
	}
}

func TestGraphQLServices(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	type summary struct {
		Service struct {
			Name     string
			Tags     []string
			Metadata []struct{ Key, Value string }
		}
		InstanceCount, Passing, Warning, Critical, Serving int
	}
	var data struct{ Services []summary }
	requireNoErrors(t, postGraphQL(t, h, `{ services { service { name tags metadata { key value } }
		instanceCount passing warning critical serving } }`, nil, &data))
	if len(data.Services) != 3 {
		t.Fatalf("services = %+v, want orders, payments, search", data.Services)
	}
	orders := data.Services[0]
	if orders.Service.Name != "orders" || orders.InstanceCount != 3 || orders.Passing != 1 || orders.Warning != 1 || orders.Critical != 1 || orders.Serving != 2 {
		t.Errorf("orders = %+v, want 3 instances: 1 passing, 1 warning, 1 critical, 2 serving", orders)
	}
	if got := fmt.Sprint(orders.Service.Metadata); got != "[{alert pager} {team shop} {tier 1}]" {
		t.Errorf("orders metadata = %s, want pairs sorted by key", got)
	}
	if search := data.Services[2]; search.Service.Name != "search" || search.InstanceCount != 0 || search.Service.Tags == nil || len(search.Service.Tags) != 0 {
		t.Errorf("search = %+v, want no instances and an empty (not null) tag list", search)
	}
	req := b.recordedCalls()[0].(*catalogpb.ListServicesRequest)
	if req.Limit != defaultServicesLimit || req.After != "" || req.Tag != "" || req.Consistency != catalogpb.Consistency_LINEARIZABLE {
		t.Errorf("ListServices got %v, want the default limit and nothing else", req)
	}

	t.Run("tag and pages", func(t *testing.T) {
		b := newFakeBackend()
		h, _ := newTestHandler(t, b)
		const query = `query($after: String) { services(tag: "prod", limit: 1, after: $after, consistency: SERIALIZABLE) { service { name } } }`
		var names []string
		var after any
		for range 5 {
			var data struct{ Services []summary }
			requireNoErrors(t, postGraphQL(t, h, query, map[string]any{"after": after}, &data))
			if len(data.Services) == 0 {
				break
			}
			names = append(names, data.Services[0].Service.Name)
			after = data.Services[0].Service.Name
		}
		if got := strings.Join(names, ","); got != "orders,payments" {
			t.Fatalf("paged prod services %s, want orders,payments", got)
		}
		for _, call := range b.recordedCalls() {
			req := call.(*catalogpb.ListServicesRequest)
			if req.Tag != "prod" || req.Limit != 1 || req.Consistency != catalogpb.Consistency_SERIALIZABLE {
				t.Errorf("ListServices got %v, want tag prod, limit 1, serializable", req)
			}
		}
	})
}

func TestGraphQLService(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	var data struct {
		Service struct {
			Name, Description, Owner, CreateRevision, ModRevision string
			Tags                                                  []string
			Instances                                             []map[string]any
			ShardMap                                              struct {
				Epoch      string
				TotalSlots int
				Shards     []struct {
					ID       string
					Slots    []struct{ From, To int }
					Replicas []string
				}
			}
		}
	}
	requireNoErrors(t, postGraphQL(t, h, `{ service(name: "orders") {
		name description owner createRevision modRevision tags
		instances { id address ports { name port } tags metadata { key value } zone dc weight state health
		            healthOutput healthChangedAt lease createRevision modRevision
		            check { http tcp grpc grpcService intervalMs timeoutMs failuresBeforeCritical successesBeforePassing } }
		shardMap { epoch totalSlots shards { id slots { from to } replicas } }
	} }`, nil, &data))
	svc := data.Service
	if svc.Name != "orders" || svc.Description != "takes orders" || svc.Owner != "shop-team" || svc.CreateRevision != "5" || svc.ModRevision != "9" ||
		fmt.Sprint(svc.Tags) != "[prod shop]" {
		t.Errorf("service = %+v", svc)
	}
	if len(svc.Instances) != 3 {
		t.Fatalf("instances = %v, want 3", svc.Instances)
	}
	wantO1 := map[string]any{
		"id": "o-1", "address": "10.0.1.1:80",
		"ports":    []any{map[string]any{"name": "admin", "port": 9090.0}, map[string]any{"name": "http", "port": 8080.0}},
		"tags":     []any{"v2"},
		"metadata": []any{map[string]any{"key": "rack", "value": "r1"}},
		"zone":     "a", "dc": "dc1", "weight": 10.0, "state": "STATE_SERVING", "health": "PASSING",
		"healthOutput": "HTTP GET http://10.0.1.1/health: 200 OK", "healthChangedAt": "2026-03-04T05:06:07.89Z",
		"lease": "7", "createRevision": "10", "modRevision": "12",
		"check": map[string]any{"http": "http://10.0.1.1/health", "tcp": "", "grpc": "", "grpcService": "",
			"intervalMs": 10000.0, "timeoutMs": 5000.0, "failuresBeforeCritical": 3.0, "successesBeforePassing": 2.0},
	}
	if got, want := fmt.Sprint(svc.Instances[0]), fmt.Sprint(wantO1); got != want {
		t.Errorf("instances[0] = %s\nwant           %s", got, want)
	}
	if o2 := svc.Instances[1]; o2["healthChangedAt"] != nil || o2["check"] != nil || fmt.Sprint(o2["ports"]) != "[]" {
		t.Errorf("instances[1] = %v, want null healthChangedAt and check, no ports", o2)
	}
	m := svc.ShardMap
	if m.Epoch != "3" || m.TotalSlots != 16 || len(m.Shards) != 2 || m.Shards[1].ID != "s2" ||
		fmt.Sprint(m.Shards[1].Slots) != "[{8 11} {12 15}]" || fmt.Sprint(m.Shards[0].Replicas) != "[o-1 o-2]" {
		t.Errorf("shardMap = %+v", m)
	}
	for _, call := range b.recordedCalls() {
		switch req := call.(type) {
		case *catalogpb.GetServiceRequest:
			if req.Name != "orders" || req.Consistency != catalogpb.Consistency_LINEARIZABLE {
				t.Errorf("GetService got %v, want a linearizable read of orders", req)
			}
		case *catalogpb.GetShardMapRequest:
			if req.Service != "orders" || req.Consistency != catalogpb.Consistency_LINEARIZABLE {
				t.Errorf("GetShardMap got %v, want a linearizable read of orders", req)
			}
		default:
			t.Errorf("unexpected backend call %T", req)
		}
	}
}

func TestGraphQLInstanceFilters(t *testing.T) {
	tests := []struct {
		name       string
		args       string
		wantIDs    string
		wantFilter *catalogpb.InstanceFilter // the filter sent
	}{
		{"none", ``, "o-1,o-2,o-3", &catalogpb.InstanceFilter{}},
		{"healthy", `(healthy: true)`, "o-1", &catalogpb.InstanceFilter{Healthy: true}},
		{"healthy false is no filter", `(healthy: false)`, "o-1,o-2,o-3", &catalogpb.InstanceFilter{}},
		{"tag", `(tag: "v2")`, "o-1,o-3", &catalogpb.InstanceFilter{Tags: []string{"v2"}}},
		{"zone", `(zone: "b")`, "o-2", &catalogpb.InstanceFilter{Zone: "b"}},
		{"state", `(state: [STATE_DRAINING, STATE_STOPPED])`, "o-3",
			&catalogpb.InstanceFilter{State: []catalogpb.InstanceState{catalogpb.InstanceState_STATE_DRAINING, catalogpb.InstanceState_STATE_STOPPED}}},
		{"health", `(health: [PASSING, WARNING])`, "o-1,o-3",
			&catalogpb.InstanceFilter{Health: []catalogpb.HealthStatus{catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING}}},
		{"combined", `(tag: "v2", zone: "a", health: [WARNING])`, "o-3",
			&catalogpb.InstanceFilter{Tags: []string{"v2"}, Zone: "a", Health: []catalogpb.HealthStatus{catalogpb.HealthStatus_WARNING}}},
		{"page", `(after: "o-1", limit: 1)`, "o-2", &catalogpb.InstanceFilter{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			h, _ := newTestHandler(t, b)
			var data struct {
				Service struct{ Instances []struct{ ID string } }
			}
			requireNoErrors(t, postGraphQL(t, h, `{ service(name: "orders", consistency: SERIALIZABLE) { instances`+tt.args+` { id } } }`, nil, &data))
			var ids []string
			for _, inst := range data.Service.Instances {
				ids = append(ids, inst.ID)
			}
			if got := strings.Join(ids, ","); got != tt.wantIDs {
				t.Errorf("instances %s, want %s", got, tt.wantIDs)
			}
			calls := b.recordedCalls()
			if len(calls) != 2 {
				t.Fatalf("backend calls %v, want GetService for the service and for its instances", calls)
			}
			req := calls[1].(*catalogpb.GetServiceRequest)
			if !proto.Equal(req.Filter, tt.wantFilter) {
				t.Errorf("filter sent %v, want %v", req.Filter, tt.wantFilter)
			}
			if req.Consistency != catalogpb.Consistency_SERIALIZABLE {
				t.Errorf("instances read %v, want SERIALIZABLE as the service field asked", req.Consistency)
			}
			wantAfter, wantLimit := "", int64(defaultInstancesLimit)
			if tt.name == "page" {
				wantAfter, wantLimit = "o-1", 1
			}
			if req.After != wantAfter || req.Limit != wantLimit {
				t.Errorf("instances read after %q limit %d, want %q and %d", req.After, req.Limit, wantAfter, wantLimit)
			}
		})
	}
}

func TestGraphQLInstanceAndShardMap(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	var data struct {
		Instance *struct {
			Service, ID, Health string
		}
		ShardMap *struct {
			Service string
			Shards  []struct{ ID, StartKey, StartKeyBase64, EndKey, EndKeyBase64 string }
		}
	}
	requireNoErrors(t, postGraphQL(t, h, `{ instance(service: "payments", id: "p-1") { service id health }
		shardMap(service: "payments") { service shards { id startKey startKeyBase64 endKey endKeyBase64 } } }`, nil, &data))
	if data.Instance == nil || data.Instance.ID != "p-1" || data.Instance.Health != "PASSING" {
		t.Errorf("instance = %+v, want p-1 PASSING", data.Instance)
	}
	if data.ShardMap == nil || len(data.ShardMap.Shards) != 2 {
		t.Fatalf("shardMap = %+v, want payments' two shards", data.ShardMap)
	}
	low, high := data.ShardMap.Shards[0], data.ShardMap.Shards[1]
	if low.StartKey != "" || low.EndKey != "m" || low.EndKeyBase64 != "bQ==" || high.StartKeyBase64 != "bf8=" {
		t.Errorf("shards = %+v, want low [\"\", m) and high from m\\xff", data.ShardMap.Shards)
	}
}

func TestGraphQLRegistryNulls(t *testing.T) {
	tests := []struct {
		name  string
		query string
	}{
		{"unknown service", `{ service(name: "nope") { name } }`},
		{"unknown instance", `{ instance(service: "orders", id: "o-9") { id } }`},
		{"instance of unknown service", `{ instance(service: "nope", id: "o-1") { id } }`},
		{"shard map of unknown service", `{ shardMap(service: "nope") { epoch } }`},
		{"service without shard map", `{ shardMap(service: "search") { epoch } }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, newFakeBackend())
			var data map[string]any
			requireNoErrors(t, postGraphQL(t, h, tt.query, nil, &data))
			if len(data) != 1 {
				t.Fatalf("data = %v, want one field", data)
			}
			for field, v := range data {
				if v != nil {
					t.Errorf("%s = %v, want null", field, v)
				}
			}
		})
	}
	t.Run("nested shard map", func(t *testing.T) {
		h, _ := newTestHandler(t, newFakeBackend())
		var data struct {
			Service struct {
				Name     string
				ShardMap *struct{ Epoch string }
			}
		}
		requireNoErrors(t, postGraphQL(t, h, `{ service(name: "search") { name shardMap { epoch } } }`, nil, &data))
		if data.Service.Name != "search" || data.Service.ShardMap != nil {
			t.Errorf("service = %+v, want search with a null shardMap", data.Service)
		}
	})
}

func TestGraphQLLeases(t *testing.T) {
	b := newFakeBackend()
	h, _ := newTestHandler(t, b)
	type lease struct {
		ID, RemainingMs, GrantRevision string
		TTL, Items                     int
	}
	var data struct{ Leases []lease }
	requireNoErrors(t, postGraphQL(t, h, `{ leases(after: "101", limit: 3) { id ttl remainingMs items grantRevision } }`, nil, &data))
	want := []lease{
		{ID: "102", RemainingMs: "8998", GrantRevision: "32", TTL: 10, Items: 2},
		{ID: "103", RemainingMs: "8997", GrantRevision: "33", TTL: 10, Items: 3},
		{ID: "104", RemainingMs: "31536000000", GrantRevision: "34", TTL: 31536000, Items: 4},
	}
	if fmt.Sprint(data.Leases) != fmt.Sprint(want) {
		t.Errorf("leases = %+v\nwant     %+v", data.Leases, want)
	}
	req := b.recordedCalls()[0].(*catalogpb.LeaseListRequest)
	if req.After != 101 || req.Limit != 3 {
		t.Errorf("LeaseList got %v, want after 101 limit 3", req)
	}

	var all struct{ Leases []lease }
	requireNoErrors(t, postGraphQL(t, h, `{ leases { id } }`, nil, &all))
	if len(all.Leases) != 5 {
		t.Errorf("leases = %v, want all 5", all.Leases)
	}
	if req := b.recordedCalls()[1].(*catalogpb.LeaseListRequest); req.After != 0 || req.Limit != defaultLeasesLimit {
		t.Errorf("LeaseList got %v, want after 0 and the default limit", req)
	}
}

func TestGraphQLRegistryArgumentErrors(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantMsg    string
		wantReason string
	}{
		{"services limit zero", `{ services(limit: 0) { passing } }`, "limit must be 1..10000, got 0", "INVALID_LIMIT"},
		{"services limit too large", `{ services(limit: 10001) { passing } }`, "limit must be 1..10000, got 10001", "INVALID_LIMIT"},
		{"instances limit", `{ service(name: "orders") { instances(limit: -1) { id } } }`, "limit must be 1..10000, got -1", "INVALID_LIMIT"},
		{"leases limit", `{ leases(limit: 20000) { id } }`, "limit must be 1..10000, got 20000", "INVALID_LIMIT"},
		{"leases after not a number", `{ leases(after: "ten") { id } }`, `after must be a lease id in decimal (0..9223372036854775807), got "ten"`, "INVALID_ARGUMENT"},
		{"leases after negative", `{ leases(after: "-3") { id } }`, `got "-3"`, "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			h, _ := newTestHandler(t, b)
			errs := postGraphQL(t, h, tt.query, nil, nil)
			if len(errs) != 1 || !strings.Contains(errs[0].Message, tt.wantMsg) {
				t.Fatalf("errors %+v, want one containing %q", errs, tt.wantMsg)
			}
			if errs[0].Extensions["reason"] != tt.wantReason || errs[0].Extensions["code"] != "InvalidArgument" {
				t.Errorf("extensions %v, want reason %s code InvalidArgument", errs[0].Extensions, tt.wantReason)
			}
			// Only the service lookup that holds the instances field runs.
			wantCalls := 0
			if strings.Contains(tt.query, "instances") {
				wantCalls = 1
			}
			if calls := b.recordedCalls(); len(calls) != wantCalls {
				t.Errorf("backend calls %v, want %d for invalid arguments", calls, wantCalls)
			}
		})
	}
	t.Run("unknown enum value", func(t *testing.T) {
		h, _ := newTestHandler(t, newFakeBackend())
		errs := postGraphQL(t, h, `{ service(name: "orders") { instances(health: [SICK]) { id } } }`, nil, nil)
		if len(errs) == 0 || !strings.Contains(errs[0].Message, `Argument "health" has invalid value [SICK]`) {
			t.Fatalf("errors %+v, want an invalid health value", errs)
		}
	})
}

func TestGraphQLRegistryBackendErrors(t *testing.T) {
	noLeader, err := status.New(codes.Unavailable, "no leader elected yet; retry").WithDetails(&errdetails.ErrorInfo{
		Domain: "catalogd", Reason: catalogpb.ErrorReason_NO_LEADER.String(),
	})
	if err != nil {
		t.Fatalf("build status: %v", err)
	}
	invalidName := status.Error(codes.InvalidArgument, `service name must be 1..63 characters of a-z, 0-9 and '-', got "Bad_Name"`)
	tests := []struct {
		name     string
		err      error
		wantMsg  string
		wantCode string
	}{
		{"unavailable", noLeader.Err(), "no leader elected yet; retry", "Unavailable"},
		{"invalid argument", invalidName, `service name must be 1..63 characters`, "InvalidArgument"},
	}
	queries := []string{
		`{ services { passing } }`,
		`{ service(name: "Bad_Name") { name } }`,
		`{ instance(service: "orders", id: "o-1") { id } }`,
		`{ shardMap(service: "orders") { epoch } }`,
		`{ leases { id } }`,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			b.registryErr = tt.err
			h, _ := newTestHandler(t, b)
			for _, query := range queries {
				errs := postGraphQL(t, h, query, nil, nil)
				if len(errs) != 1 || !strings.Contains(errs[0].Message, tt.wantMsg) || errs[0].Extensions["code"] != tt.wantCode {
					t.Errorf("%s: errors %+v, want one with %q and code %s", query, errs, tt.wantMsg, tt.wantCode)
				}
			}
		})
	}
}

// TestGraphQLConcurrentRegistryRequests is meant for -race: enum values are
// parsed and written by concurrent requests.
func TestGraphQLConcurrentRegistryRequests(t *testing.T) {
	h, _ := newTestHandler(t, newFakeBackend())
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			query := `{ service(name: "orders") { instances(state: [STATE_SERVING], health: [PASSING, CRITICAL]) { id state health } } }`
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/graphql", strings.NewReader(fmt.Sprintf(`{"query": %q}`, query)))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"health":"CRITICAL"`) || strings.Contains(rec.Body.String(), `"errors"`) {
				errc <- fmt.Errorf("request %d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
