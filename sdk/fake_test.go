package sdk

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// errHang makes a fake handler wait until the caller's context ends.
var errHang = status.Error(codes.Internal, "fake: hang")

// A fakeServer serves KV and Cluster on a local port. Each call pops the next
// scripted failure, if any, and otherwise succeeds with a canned response.
type fakeServer struct {
	catalogpb.UnimplementedKVServer
	catalogpb.UnimplementedClusterServer

	name   string
	addr   string
	server *grpc.Server
	mu     sync.Mutex
	// callC receives the method name of every call, when not nil.
	callC    chan string
	failures []error
	calls    map[string]int
	requests map[string]proto.Message
}

func startFake(t *testing.T, name string) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeServer{
		name:     name,
		addr:     lis.Addr().String(),
		server:   grpc.NewServer(),
		calls:    make(map[string]int),
		requests: make(map[string]proto.Message),
	}
	catalogpb.RegisterKVServer(f.server, f)
	catalogpb.RegisterClusterServer(f.server, f)
	go func() { _ = f.server.Serve(lis) }()
	t.Cleanup(f.server.Stop)
	return f
}

// failNext scripts the errors the next calls return, in order.
func (f *fakeServer) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, errs...)
}

// notifyCalls makes every call send its method name on a new channel, returned.
func (f *fakeServer) notifyCalls() <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callC = make(chan string, 100)
	return f.callC
}

func (f *fakeServer) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *fakeServer) lastRequest(method string) proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[method]
}

func (f *fakeServer) handle(ctx context.Context, method string, req proto.Message) error {
	f.mu.Lock()
	f.calls[method]++
	f.requests[method] = proto.Clone(req)
	var err error
	if len(f.failures) > 0 {
		err, f.failures = f.failures[0], f.failures[1:]
	}
	callC := f.callC
	f.mu.Unlock()
	if callC != nil {
		callC <- method
	}
	if err == errHang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

func (f *fakeServer) header() *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 3, RaftTerm: 4}
}

func (f *fakeServer) Put(ctx context.Context, req *catalogpb.PutRequest) (*catalogpb.PutResponse, error) {
	if err := f.handle(ctx, "Put", req); err != nil {
		return nil, err
	}
	return &catalogpb.PutResponse{Header: f.header()}, nil
}

func (f *fakeServer) Get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	if err := f.handle(ctx, "Get", req); err != nil {
		return nil, err
	}
	return &catalogpb.GetResponse{
		Header: f.header(),
		Kvs:    []*catalogpb.KeyValue{{Key: req.Key, Value: []byte("from " + f.name)}},
		Count:  1,
	}, nil
}

func (f *fakeServer) Delete(ctx context.Context, req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, error) {
	if err := f.handle(ctx, "Delete", req); err != nil {
		return nil, err
	}
	return &catalogpb.DeleteResponse{Header: f.header(), Deleted: 1}, nil
}

func (f *fakeServer) Txn(ctx context.Context, req *catalogpb.TxnRequest) (*catalogpb.TxnResponse, error) {
	if err := f.handle(ctx, "Txn", req); err != nil {
		return nil, err
	}
	return &catalogpb.TxnResponse{Header: f.header(), Succeeded: true}, nil
}

func (f *fakeServer) Status(ctx context.Context, req *catalogpb.StatusRequest) (*catalogpb.StatusResponse, error) {
	if err := f.handle(ctx, "Status", req); err != nil {
		return nil, err
	}
	return &catalogpb.StatusResponse{Header: f.header(), Name: f.name}, nil
}

// reasonErr is the error a catalogd server returns for reason.
func reasonErr(t *testing.T, code codes.Code, reason catalogpb.ErrorReason, msg string) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Domain: "catalogd", Reason: reason.String()})
	if err != nil {
		t.Fatalf("attach ErrorInfo: %v", err)
	}
	return st.Err()
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

// newTestClient returns a client whose retries wait milliseconds, closed at
// the end of the test.
func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	c.backoffBase = time.Millisecond
	c.backoffMax = 4 * time.Millisecond
	t.Cleanup(func() { c.Close() })
	return c
}
