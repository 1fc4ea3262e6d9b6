package sdk

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A coordFake serves Lease, Lock, Election, Barrier and Queue on a local
// port. Each method answers through the test's function for it (nil: a
// canned success) and records the requests it got.
type coordFake struct {
	addr string

	mu       sync.Mutex
	requests map[string][]proto.Message
	// callC receives the method name of every call, when not nil.
	callC chan string

	// ttl is the TTL Grant gives and renewals answer (seconds); renew, if
	// set, decides each renewal's answer: ttl > 0 renews, 0 says the lease
	// is gone, < 0 leaves the request unanswered.
	ttl   int64
	renew func(id int64) int64

	// lockStream makes Lock.Stream serve (else it is Unimplemented, as on
	// a server that predates it); streamOpens and streamEnds count the
	// streams opened and ended.
	lockStream  bool
	streamOpens int
	streamEnds  int
	// status answers Cluster.Status (nil: Unimplemented).
	status   func() *catalogpb.StatusResponse
	lock     func(ctx context.Context, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error)
	unlock   func(ctx context.Context, req *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, error)
	campaign func(ctx context.Context, req *catalogpb.CampaignRequest) (*catalogpb.CampaignResponse, error)
	resign   func(ctx context.Context, req *catalogpb.ResignRequest) (*catalogpb.ResignResponse, error)
	observe  func(req *catalogpb.LeaderRequest, stream catalogpb.Election_ObserveServer) error
	enter    func(ctx context.Context, req *catalogpb.BarrierEnterRequest) (*catalogpb.BarrierEnterResponse, error)
	leave    func(ctx context.Context, req *catalogpb.BarrierLeaveRequest) (*catalogpb.BarrierLeaveResponse, error)
	dequeue  func(ctx context.Context, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, error)
	ack      func(ctx context.Context, req *catalogpb.AckRequest) (*catalogpb.AckResponse, error)
}

func startCoordFake(t *testing.T) *coordFake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &coordFake{addr: lis.Addr().String(), requests: map[string][]proto.Message{}, ttl: 60}
	srv := grpc.NewServer()
	catalogpb.RegisterLeaseServer(srv, fakeLease{f: f})
	catalogpb.RegisterLockServer(srv, fakeLock{f: f})
	catalogpb.RegisterElectionServer(srv, fakeElection{f: f})
	catalogpb.RegisterBarrierServer(srv, fakeBarrier{f: f})
	catalogpb.RegisterQueueServer(srv, fakeQueue{f: f})
	catalogpb.RegisterClusterServer(srv, fakeCluster{f: f})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// set changes the fake's behaviour under its lock.
func (f *coordFake) set(change func(f *coordFake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *coordFake) record(method string, req proto.Message) {
	f.mu.Lock()
	f.requests[method] = append(f.requests[method], proto.Clone(req))
	callC := f.callC
	f.mu.Unlock()
	if callC != nil {
		callC <- method
	}
}

// notifyCalls makes every call send its method name on a new channel.
func (f *coordFake) notifyCalls() <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callC = make(chan string, 100)
	return f.callC
}

// got returns the requests method received, in order.
func (f *coordFake) got(method string) []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.requests[method]...)
}

// The fake's services, one type each: their methods share names (Get, List).
type (
	fakeLease struct {
		catalogpb.UnimplementedLeaseServer
		f *coordFake
	}
	fakeLock struct {
		catalogpb.UnimplementedLockServer
		f *coordFake
	}
	fakeElection struct {
		catalogpb.UnimplementedElectionServer
		f *coordFake
	}
	fakeBarrier struct {
		catalogpb.UnimplementedBarrierServer
		f *coordFake
	}
	fakeQueue struct {
		catalogpb.UnimplementedQueueServer
		f *coordFake
	}
	fakeCluster struct {
		catalogpb.UnimplementedClusterServer
		f *coordFake
	}
)

func (s fakeCluster) Status(ctx context.Context, req *catalogpb.StatusRequest) (*catalogpb.StatusResponse, error) {
	s.f.record("Status", req)
	s.f.mu.Lock()
	fn := s.f.status
	s.f.mu.Unlock()
	if fn == nil {
		return nil, status.Error(codes.Unimplemented, "fake: no Cluster.Status")
	}
	return fn(), nil
}

func coordHeader() *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 3, RaftTerm: 4}
}

func (s fakeLease) Grant(ctx context.Context, req *catalogpb.LeaseGrantRequest) (*catalogpb.LeaseGrantResponse, error) {
	s.f.record("Grant", req)
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return &catalogpb.LeaseGrantResponse{Header: coordHeader(), Id: 42, TtlSeconds: s.f.ttl}, nil
}

func (s fakeLease) Revoke(ctx context.Context, req *catalogpb.LeaseRevokeRequest) (*catalogpb.LeaseRevokeResponse, error) {
	s.f.record("Revoke", req)
	return &catalogpb.LeaseRevokeResponse{Header: coordHeader()}, nil
}

func (s fakeLease) KeepAlive(stream catalogpb.Lease_KeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		s.f.record("KeepAlive", req)
		s.f.mu.Lock()
		ttl, renew := s.f.ttl, s.f.renew
		s.f.mu.Unlock()
		if renew != nil {
			ttl = renew(req.GetId())
		}
		if ttl < 0 {
			continue
		}
		if err := stream.Send(&catalogpb.LeaseKeepAliveResponse{Header: coordHeader(), Id: req.GetId(), TtlSeconds: ttl}); err != nil {
			return err
		}
	}
}

func (s fakeLock) Lock(ctx context.Context, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
	s.f.record("Lock", req)
	s.f.mu.Lock()
	fn := s.f.lock
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.LockResponse{Header: coordHeader(), Acquired: true, Token: 1}, nil
}

func (s fakeLock) Unlock(ctx context.Context, req *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, error) {
	s.f.record("Unlock", req)
	s.f.mu.Lock()
	fn := s.f.unlock
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.UnlockResponse{Header: coordHeader()}, nil
}

// errBreakStream, returned by the lock or unlock function, makes Lock.Stream
// end the stream instead of answering the call (a lost connection).
var errBreakStream = status.Error(codes.Unavailable, "fake: stream broken")

// Stream serves Lock and Unlock as the server does: each call through the
// unary method, in its own goroutine, ended by its timeout or a cancel.
func (s fakeLock) Stream(stream catalogpb.Lock_StreamServer) error {
	s.f.mu.Lock()
	on := s.f.lockStream
	if on {
		s.f.streamOpens++
	}
	s.f.mu.Unlock()
	if !on {
		return status.Error(codes.Unimplemented, "fake: no Lock.Stream")
	}
	defer s.f.set(func(f *coordFake) { f.streamEnds++ })
	ctx, cancelAll := context.WithCancel(stream.Context())
	defer cancelAll()
	var mu sync.Mutex
	cancels := map[uint64]context.CancelFunc{}
	broken := make(chan struct{})
	var breakOnce sync.Once
	recvd := make(chan *catalogpb.LockStreamRequest)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				close(recvd)
				return
			}
			recvd <- req
		}
	}()
	for {
		var req *catalogpb.LockStreamRequest
		select {
		case <-broken:
			return errBreakStream
		case r, ok := <-recvd:
			if !ok {
				return nil
			}
			req = r
		}
		id := req.GetCallId()
		if req.GetCancel() {
			mu.Lock()
			if c := cancels[id]; c != nil {
				c()
			}
			mu.Unlock()
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		if t := req.GetTimeoutMs(); t > 0 {
			cctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Millisecond)
		}
		mu.Lock()
		cancels[id] = cancel
		mu.Unlock()
		go func() {
			defer cancel()
			out := &catalogpb.LockStreamResponse{CallId: id}
			var err error
			switch op := req.GetOp().(type) {
			case *catalogpb.LockStreamRequest_Lock:
				var r *catalogpb.LockResponse
				r, err = s.Lock(cctx, op.Lock)
				out.Result = &catalogpb.LockStreamResponse_Lock{Lock: r}
			case *catalogpb.LockStreamRequest_Unlock:
				var r *catalogpb.UnlockResponse
				r, err = s.Unlock(cctx, op.Unlock)
				out.Result = &catalogpb.LockStreamResponse_Unlock{Unlock: r}
			}
			if err == errBreakStream {
				breakOnce.Do(func() { close(broken) })
				return
			}
			if err != nil {
				b, _ := proto.Marshal(status.Convert(err).Proto())
				out.Result = &catalogpb.LockStreamResponse_Error{Error: b}
			}
			mu.Lock()
			defer mu.Unlock()
			_ = stream.Send(out)
		}()
	}
}

func (s fakeElection) Campaign(ctx context.Context, req *catalogpb.CampaignRequest) (*catalogpb.CampaignResponse, error) {
	s.f.record("Campaign", req)
	s.f.mu.Lock()
	fn := s.f.campaign
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.CampaignResponse{Header: coordHeader(), Leader: &catalogpb.LeaderKey{Name: req.Name, Lease: req.Lease, Token: 1}, Value: req.Value}, nil
}

func (s fakeElection) Resign(ctx context.Context, req *catalogpb.ResignRequest) (*catalogpb.ResignResponse, error) {
	s.f.record("Resign", req)
	s.f.mu.Lock()
	fn := s.f.resign
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.ResignResponse{Header: coordHeader()}, nil
}

func (s fakeElection) Observe(req *catalogpb.LeaderRequest, stream catalogpb.Election_ObserveServer) error {
	s.f.record("Observe", req)
	s.f.mu.Lock()
	fn := s.f.observe
	s.f.mu.Unlock()
	if fn != nil {
		return fn(req, stream)
	}
	<-stream.Context().Done()
	return nil
}

func (s fakeBarrier) Enter(ctx context.Context, req *catalogpb.BarrierEnterRequest) (*catalogpb.BarrierEnterResponse, error) {
	s.f.record("Enter", req)
	s.f.mu.Lock()
	fn := s.f.enter
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.BarrierEnterResponse{Header: coordHeader(), State: &catalogpb.BarrierState{Name: req.Name, CreateRevision: 3}}, nil
}

func (s fakeBarrier) Leave(ctx context.Context, req *catalogpb.BarrierLeaveRequest) (*catalogpb.BarrierLeaveResponse, error) {
	s.f.record("Leave", req)
	s.f.mu.Lock()
	fn := s.f.leave
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.BarrierLeaveResponse{Header: coordHeader()}, nil
}

func (s fakeBarrier) Get(ctx context.Context, req *catalogpb.GetBarrierRequest) (*catalogpb.GetBarrierResponse, error) {
	s.f.record("GetBarrier", req)
	return &catalogpb.GetBarrierResponse{Header: coordHeader()}, nil
}

func (s fakeQueue) Dequeue(ctx context.Context, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, error) {
	s.f.record("Dequeue", req)
	s.f.mu.Lock()
	fn := s.f.dequeue
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.DequeueResponse{Header: coordHeader(), Item: &catalogpb.QueueItem{Queue: req.Queue, Id: 1, Consumer: req.Lease, WaiterId: req.WaiterId}}, nil
}

func (s fakeQueue) Ack(ctx context.Context, req *catalogpb.AckRequest) (*catalogpb.AckResponse, error) {
	s.f.record("Ack", req)
	s.f.mu.Lock()
	fn := s.f.ack
	s.f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &catalogpb.AckResponse{Header: coordHeader()}, nil
}

// failing returns a handler that fails with errs in turn, then answers
// with then.
func failing[Req, Resp any](errs []error, then func(ctx context.Context, req Req) (Resp, error)) func(ctx context.Context, req Req) (Resp, error) {
	var mu sync.Mutex
	return func(ctx context.Context, req Req) (Resp, error) {
		mu.Lock()
		var err error
		if len(errs) > 0 {
			err, errs = errs[0], errs[1:]
		}
		mu.Unlock()
		if err != nil {
			var zero Resp
			return zero, err
		}
		return then(ctx, req)
	}
}

// hang waits for the call's context to end and returns its error.
func hang[Req, Resp any](ctx context.Context, _ Req) (Resp, error) {
	var zero Resp
	<-ctx.Done()
	return zero, status.FromContextError(ctx.Err()).Err()
}

var errUnavailable = status.Error(codes.Unavailable, "fake: connection refused")

// newFakeSession returns a client of f (fast retries) and a session on it,
// closed when the test ends.
func newFakeSession(t *testing.T, f *coordFake, cfg Config) (*Client, *Session) {
	t.Helper()
	cfg.Endpoints = []string{f.addr}
	c := newTestClient(t, cfg)
	s, err := NewSession(t.Context(), c)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// waitCallOf waits until the fake receives a call of method.
func waitCallOf(t *testing.T, calls <-chan string, method string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-calls:
			if m == method {
				return
			}
		case <-timeout:
			t.Fatalf("no %s call reached the server", method)
		}
	}
}
