package sdk

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A fakeLeases serves the Lease service from a map of lease id → TTL.
type fakeLeases struct {
	catalogpb.UnimplementedLeaseServer

	mu       sync.Mutex
	ttls     map[int64]int64
	streams  int           // KeepAlive streams opened
	renewals map[int64]int // keep-alive requests per lease
	breakC   chan error    // ends the current streams with the error sent
	grants   []*catalogpb.LeaseGrantRequest
	lastTTL  *catalogpb.LeaseTimeToLiveRequest
	grantErr error
}

func startFakeLeases(t *testing.T) (*fakeLeases, *Client) {
	t.Helper()
	f := &fakeLeases{ttls: map[int64]int64{}, renewals: map[int64]int{}, breakC: make(chan error, 10)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	catalogpb.RegisterLeaseServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c, err := New(Config{Endpoints: []string{lis.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	c.backoffBase, c.backoffMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { c.Close() })
	return f, c
}

func leaseReasonErr(code codes.Code, reason catalogpb.ErrorReason, msg string) error {
	st, _ := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason.String(), Domain: "catalogd"})
	return st.Err()
}

func (f *fakeLeases) set(id, ttl int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ttls[id] = ttl
}

func (f *fakeLeases) counts() (streams int, renewals map[int64]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	renewals = map[int64]int{}
	for k, v := range f.renewals {
		renewals[k] = v
	}
	return f.streams, renewals
}

func (f *fakeLeases) Grant(_ context.Context, req *catalogpb.LeaseGrantRequest) (*catalogpb.LeaseGrantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants = append(f.grants, req)
	if f.grantErr != nil {
		return nil, f.grantErr
	}
	id := req.Id
	if id == 0 {
		id = 100 + int64(len(f.grants))
	}
	f.ttls[id] = req.TtlSeconds
	return &catalogpb.LeaseGrantResponse{Id: id, TtlSeconds: req.TtlSeconds}, nil
}

func (f *fakeLeases) Revoke(_ context.Context, req *catalogpb.LeaseRevokeRequest) (*catalogpb.LeaseRevokeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ttls[req.Id]; !ok {
		return nil, leaseReasonErr(codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND, "lease: lease not found")
	}
	delete(f.ttls, req.Id)
	return &catalogpb.LeaseRevokeResponse{Items: []*catalogpb.LeaseItem{{Kind: "kv", Key: "k"}}}, nil
}

func (f *fakeLeases) TimeToLive(_ context.Context, req *catalogpb.LeaseTimeToLiveRequest) (*catalogpb.LeaseTimeToLiveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastTTL = req
	ttl, ok := f.ttls[req.Id]
	if !ok {
		return &catalogpb.LeaseTimeToLiveResponse{Id: req.Id, TtlSeconds: -1}, nil
	}
	return &catalogpb.LeaseTimeToLiveResponse{Id: req.Id, TtlSeconds: ttl, GrantedTtlSeconds: ttl}, nil
}

func (f *fakeLeases) List(_ context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error) {
	return &catalogpb.LeaseListResponse{Leases: []*catalogpb.LeaseStatus{{Id: req.After + 1}}, More: req.Limit == 1}, nil
}

func (f *fakeLeases) KeepAlive(stream catalogpb.Lease_KeepAliveServer) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	reqC := make(chan *catalogpb.LeaseKeepAliveRequest)
	errC := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errC <- err
				return
			}
			select {
			case reqC <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case err := <-f.breakC:
			return err
		case err := <-errC:
			if err == io.EOF {
				return nil
			}
			return err
		case req := <-reqC:
			f.mu.Lock()
			f.renewals[req.Id]++
			ttl := f.ttls[req.Id]
			f.mu.Unlock()
			if err := stream.Send(&catalogpb.LeaseKeepAliveResponse{Id: req.Id, TtlSeconds: ttl}); err != nil {
				return err
			}
		}
	}
}

func TestLeaseCalls(t *testing.T) {
	f, c := startFakeLeases(t)
	ctx := t.Context()
	resp, err := c.Grant(ctx, 1500*time.Millisecond)
	if err != nil || resp.TtlSeconds != 2 {
		t.Fatalf("grant of 1.5s: %v %v, want a TTL rounded up to 2s", resp, err)
	}
	if _, err := c.GrantWithID(ctx, 7, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.grants[1].Id != 7 || f.grants[1].TtlSeconds != 10 {
		t.Errorf("grant request %v", f.grants[1])
	}
	if _, err := c.GrantWithID(ctx, -1, time.Second); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("negative id: %v", err)
	}
	f.grantErr = leaseReasonErr(codes.InvalidArgument, catalogpb.ErrorReason_LEASE_TTL_OUT_OF_RANGE, "ttl_seconds must be 1..31536000, got 0")
	if _, err := c.Grant(ctx, 0); !errors.Is(err, ErrTTLOutOfRange) || err.Error() != "ttl_seconds must be 1..31536000, got 0" {
		t.Errorf("grant out of range: %v", err)
	}
	ttl, err := c.TimeToLive(ctx, 7, true)
	if err != nil || ttl.TtlSeconds != 10 || !f.lastTTL.Items {
		t.Errorf("time to live: %v %v (request %v)", ttl, err, f.lastTTL)
	}
	rv, err := c.Revoke(ctx, 7)
	if err != nil || len(rv.Items) != 1 {
		t.Errorf("revoke: %v %v", rv, err)
	}
	if _, err := c.Revoke(ctx, 7); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("second revoke: %v, want ErrLeaseNotFound", err)
	}
	for _, bad := range []func() error{
		func() error { _, err := c.Revoke(ctx, 0); return err },
		func() error { _, err := c.TimeToLive(ctx, -2, false); return err },
		func() error { _, err := c.KeepAliveOnce(ctx, 0); return err },
		func() error { _, err := c.KeepAlive(ctx, 0); return err },
	} {
		if err := bad(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("bad lease id: %v", err)
		}
	}
	list, err := c.Leases(ctx, 41, 1)
	if err != nil || list.Leases[0].Id != 42 || !list.More {
		t.Errorf("leases: %v %v", list, err)
	}

	f.set(9, 3)
	ka, err := c.KeepAliveOnce(ctx, 9)
	if err != nil || ka.TtlSeconds != 3 {
		t.Errorf("keep-alive once: %v %v", ka, err)
	}
	if _, err := c.KeepAliveOnce(ctx, 10); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("keep-alive once of an unknown lease: %v", err)
	}
}

func recvRenewal(t *testing.T, k *KeepAlive) *catalogpb.LeaseKeepAliveResponse {
	t.Helper()
	select {
	case r := <-k.C():
		return r
	case <-k.Done():
		t.Fatalf("keep-alive ended: %v", k.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("no renewal within 5s")
	}
	return nil
}

func waitKeepAliveDone(t *testing.T, k *KeepAlive) error {
	t.Helper()
	select {
	case <-k.Done():
		return k.Err()
	case <-time.After(5 * time.Second):
		t.Fatal("keep-alive did not end within 5s")
		return nil
	}
}

func TestKeepAliveSharesOneStreamAndRenewsEveryThirdOfTheTTL(t *testing.T) {
	f, c := startFakeLeases(t)
	f.set(1, 1)
	f.set(2, 1)
	a, err := c.KeepAlive(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.KeepAlive(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 4 {
		if r := recvRenewal(t, a); r.Id != 1 || r.TtlSeconds != 1 {
			t.Fatalf("renewal %v", r)
		}
		recvRenewal(t, b)
	}
	// The first renewal goes at once, the next ones every 333ms.
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("4 renewals of a 1s lease within %v: more often than every TTL/3", d)
	}
	streams, _ := f.counts()
	if streams != 1 {
		t.Errorf("%d streams for two leases of one client, want 1", streams)
	}
	a.Stop()
	if err := waitKeepAliveDone(t, a); !errors.Is(err, ErrKeepAliveStopped) {
		t.Errorf("after Stop: %v", err)
	}
	_, before := f.counts()
	recvRenewal(t, b)
	recvRenewal(t, b)
	_, after := f.counts()
	if after[1] != before[1] {
		t.Errorf("stopped lease renewed %d more times", after[1]-before[1])
	}
}

func TestKeepAliveReconnectsAfterTheStreamBreaks(t *testing.T) {
	f, c := startFakeLeases(t)
	f.set(5, 3)
	k, err := c.KeepAlive(t.Context(), 5)
	if err != nil {
		t.Fatal(err)
	}
	recvRenewal(t, k)
	f.breakC <- leaseReasonErr(codes.Unavailable, catalogpb.ErrorReason_NOT_LEADER, "server: this member is not the leader")
	// The new stream renews at once, not a TTL/3 (1s) later.
	start := time.Now()
	recvRenewal(t, k)
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("renewal on the new stream after %v", d)
	}
	if streams, _ := f.counts(); streams != 2 {
		t.Errorf("%d streams, want 2", streams)
	}
}

func TestKeepAliveEndsWhenTheLeaseIsGone(t *testing.T) {
	f, c := startFakeLeases(t)
	f.set(3, 1)
	k, err := c.KeepAlive(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.KeepAlive(t.Context(), 3) // same lease, second caller
	if err != nil {
		t.Fatal(err)
	}
	recvRenewal(t, k)
	f.set(3, 0) // expired on the server
	for _, ka := range []*KeepAlive{k, other} {
		if err := waitKeepAliveDone(t, ka); !errors.Is(err, ErrLeaseNotFound) {
			t.Errorf("after the lease was gone: %v, want ErrLeaseNotFound", err)
		}
	}
}

func TestKeepAliveEndsWithItsContextAndItsClient(t *testing.T) {
	f, c := startFakeLeases(t)
	f.set(4, 60)
	ctx, cancel := context.WithCancel(t.Context())
	k, err := c.KeepAlive(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	recvRenewal(t, k)
	cancel()
	if err := waitKeepAliveDone(t, k); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}
	if _, err := c.KeepAlive(ctx, 4); !errors.Is(err, context.Canceled) {
		t.Errorf("KeepAlive with a done context: %v", err)
	}

	k, err = c.KeepAlive(t.Context(), 4)
	if err != nil {
		t.Fatal(err)
	}
	recvRenewal(t, k)
	c.Close()
	if err := waitKeepAliveDone(t, k); !errors.Is(err, ErrKeepAliveStopped) {
		t.Errorf("after Close: %v", err)
	}
	if _, err := c.KeepAlive(t.Context(), 4); !errors.Is(err, ErrKeepAliveStopped) {
		t.Errorf("KeepAlive on a closed client: %v", err)
	}
}

func TestKeepAliveDropsRenewalsNobodyReads(t *testing.T) {
	f, c := startFakeLeases(t)
	f.set(6, 1)
	defer func(n int) { keepAliveBuffer = n }(keepAliveBuffer)
	keepAliveBuffer = 2
	k, err := c.KeepAlive(t.Context(), 6)
	if err != nil {
		t.Fatal(err)
	}
	// Keep-alives continue while C is full.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, renewals := f.counts()
		if renewals[6] > keepAliveBuffer+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d renewals", renewals[6])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(k.C()); n != keepAliveBuffer {
		t.Errorf("C holds %d, want %d", n, keepAliveBuffer)
	}
}
