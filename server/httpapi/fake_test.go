package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

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

	mu          sync.Mutex
	statusCalls int
	gets        []*catalogpb.GetRequest
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
