package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxFakeKey is the fake's key size limit, small so tests can exceed it.
const maxFakeKey = 64

// A fakeServer is an in-memory catalogd: a KV map with revisions and a
// scripted status. It validates keys as a server does, with ErrorInfo details.
type fakeServer struct {
	catalogpb.UnimplementedKVServer
	catalogpb.UnimplementedClusterServer

	addr   string
	status *catalogpb.StatusResponse

	mu       sync.Mutex
	revision int64
	kvs      map[string]*catalogpb.KeyValue
	puts     int
}

func startFake(t *testing.T, status *catalogpb.StatusResponse) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeServer{addr: lis.Addr().String(), status: status, kvs: make(map[string]*catalogpb.KeyValue)}
	srv := grpc.NewServer()
	catalogpb.RegisterKVServer(srv, f)
	catalogpb.RegisterClusterServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func reasonError(code codes.Code, reason catalogpb.ErrorReason, format string, args ...any) error {
	st, err := status.New(code, fmt.Sprintf(format, args...)).
		WithDetails(&errdetails.ErrorInfo{Domain: "catalogd", Reason: reason.String()})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return reasonError(codes.InvalidArgument, catalogpb.ErrorReason_KEY_EMPTY, "key must not be empty")
	}
	if len(key) > maxFakeKey {
		return reasonError(codes.InvalidArgument, catalogpb.ErrorReason_KEY_TOO_LARGE,
			"key must be 1..%d bytes, got %d", maxFakeKey, len(key))
	}
	return nil
}

func (f *fakeServer) header() *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: f.revision, RaftTerm: 2}
}

// rangeKeys returns the sorted keys matching key (or its prefix).
func (f *fakeServer) rangeKeys(key []byte, prefix bool) []string {
	var keys []string
	for k := range f.kvs {
		if k == string(key) || (prefix && strings.HasPrefix(k, string(key))) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (f *fakeServer) Put(_ context.Context, req *catalogpb.PutRequest) (*catalogpb.PutResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if req.Lease != 0 {
		return nil, reasonError(codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND, "lease %d not found", req.Lease)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revision++
	f.puts++
	prev := f.kvs[string(req.Key)]
	kv := &catalogpb.KeyValue{Key: req.Key, Value: req.Value, CreateRevision: f.revision, ModRevision: f.revision, Version: 1}
	if prev != nil {
		kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
	}
	f.kvs[string(req.Key)] = kv
	resp := &catalogpb.PutResponse{Header: f.header()}
	if req.PrevKv {
		resp.PrevKv = prev
	}
	return resp, nil
}

func (f *fakeServer) Get(_ context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := f.rangeKeys(req.Key, req.Prefix)
	resp := &catalogpb.GetResponse{Header: f.header(), Count: int64(len(keys))}
	if len(req.ContinueToken) > 0 {
		i, found := slices.BinarySearch(keys, string(req.ContinueToken))
		if !found {
			return nil, reasonError(codes.InvalidArgument, catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN, "continue token matches no key of the range")
		}
		keys = keys[i:]
	}
	if req.CountOnly {
		return resp, nil
	}
	if req.Limit > 0 && int64(len(keys)) > req.Limit {
		resp.More, resp.NextToken = true, []byte(keys[req.Limit])
		keys = keys[:req.Limit]
	}
	for _, k := range keys {
		kv := proto.CloneOf(f.kvs[k])
		if req.KeysOnly {
			kv.Value = nil
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	return resp, nil
}

func (f *fakeServer) Delete(_ context.Context, req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := f.rangeKeys(req.Key, req.Prefix)
	if len(keys) > 0 {
		f.revision++
	}
	resp := &catalogpb.DeleteResponse{Header: f.header(), Deleted: int64(len(keys))}
	for _, k := range keys {
		if req.PrevKv {
			resp.PrevKvs = append(resp.PrevKvs, f.kvs[k])
		}
		delete(f.kvs, k)
	}
	return resp, nil
}

func (f *fakeServer) Status(context.Context, *catalogpb.StatusRequest) (*catalogpb.StatusResponse, error) {
	if f.status == nil {
		return nil, reasonError(codes.Unavailable, catalogpb.ErrorReason_STOPPED, "server is stopping")
	}
	return f.status, nil
}

func (f *fakeServer) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rangeKeys(nil, true)
}

// result is what one catctl run printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// catctl runs the CLI in-process with args and the given environment.
func catctl(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// deadEndpoint returns an address where nothing listens.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}
