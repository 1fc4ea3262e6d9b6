package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A streamClient drives one Lock.Stream by hand: responses are collected by
// call id.
type streamClient struct {
	t      *testing.T
	stream catalogpb.Lock_StreamClient
	cancel context.CancelFunc

	mu     sync.Mutex
	got    map[uint64][]*catalogpb.LockStreamResponse
	ended  error
	notify chan struct{}
}

func openLockStream(t *testing.T, c *coord) *streamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := c.lock.Stream(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open lock stream: %v", err)
	}
	sc := &streamClient{t: t, stream: stream, cancel: cancel, got: map[uint64][]*catalogpb.LockStreamResponse{}, notify: make(chan struct{}, 1)}
	t.Cleanup(cancel)
	go func() {
		for {
			resp, err := stream.Recv()
			sc.mu.Lock()
			if err != nil {
				sc.ended = err
			} else {
				sc.got[resp.CallId] = append(sc.got[resp.CallId], resp)
			}
			sc.mu.Unlock()
			select {
			case sc.notify <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return sc
}

func (sc *streamClient) send(req *catalogpb.LockStreamRequest) {
	sc.t.Helper()
	if err := sc.stream.Send(req); err != nil {
		sc.t.Fatalf("send call %d: %v", req.CallId, err)
	}
}

func (sc *streamClient) lock(id uint64, timeoutMs int64, req *catalogpb.LockRequest) {
	sc.t.Helper()
	sc.send(&catalogpb.LockStreamRequest{CallId: id, TimeoutMs: timeoutMs, Op: &catalogpb.LockStreamRequest_Lock{Lock: req}})
}

func (sc *streamClient) unlock(id uint64, req *catalogpb.UnlockRequest) {
	sc.t.Helper()
	sc.send(&catalogpb.LockStreamRequest{CallId: id, Op: &catalogpb.LockStreamRequest_Unlock{Unlock: req}})
}

// response waits for call id's next response and takes it.
func (sc *streamClient) response(id uint64) *catalogpb.LockStreamResponse {
	sc.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		sc.mu.Lock()
		var resp *catalogpb.LockStreamResponse
		if q := sc.got[id]; len(q) > 0 {
			resp, sc.got[id] = q[0], q[1:]
		}
		ended := sc.ended
		sc.mu.Unlock()
		if resp != nil {
			return resp
		}
		if ended != nil {
			sc.t.Fatalf("stream ended before call %d was answered: %v", id, ended)
		}
		select {
		case <-sc.notify:
		case <-deadline:
			sc.t.Fatalf("call %d not answered", id)
		}
	}
}

// answered reports whether call id has a response yet.
func (sc *streamClient) answered(id uint64) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.got[id]) > 0
}

// callErr takes call id's response and decodes its error (nil if it
// succeeded).
func (sc *streamClient) callErr(id uint64) error {
	sc.t.Helper()
	return sc.errOf(sc.response(id))
}

func (sc *streamClient) errOf(resp *catalogpb.LockStreamResponse) error {
	sc.t.Helper()
	b := resp.GetError()
	if b == nil {
		return nil
	}
	var st spb.Status
	if err := proto.Unmarshal(b, &st); err != nil {
		sc.t.Fatalf("call %d: undecodable error: %v", resp.CallId, err)
	}
	return status.ErrorProto(&st)
}

func TestLockStreamCarriesLockAndUnlockAsTheUnaryCalls(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	sc := openLockStream(t, c)

	sc.lock(1, 0, &catalogpb.LockRequest{Name: "m", Lease: a})
	first := sc.response(1).GetLock()
	if !first.GetAcquired() || first.GetToken() == 0 || first.GetHeader().GetRevision() == 0 {
		t.Fatalf("first lock answered %v", first)
	}
	// A second call on the same stream waits server-side while others go on.
	sc.lock(2, 0, &catalogpb.LockRequest{Name: "m", Lease: b})
	waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))

	sc.unlock(3, &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: first.Token + 100})
	wantCode(t, sc.callErr(3), codes.FailedPrecondition, "LOCK_NOT_HELD", fmt.Sprintf("token %d", first.Token+100))
	if sc.answered(2) {
		t.Fatal("b's lock was answered while a holds the lock")
	}

	sc.unlock(4, &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: first.Token})
	unlocked := sc.response(4)
	if err := sc.errOf(unlocked); err != nil {
		t.Fatalf("unlock with the holder's token: %v", err)
	}
	second := sc.response(2).GetLock()
	if !second.GetAcquired() || second.GetToken() <= first.GetToken() {
		t.Fatalf("b's lock answered %v after a's token %d", second, first.GetToken())
	}
	if got := unlocked.GetUnlock(); got == nil || got.GetHeader().GetRevision() == 0 {
		t.Fatalf("unlock answered %v", got)
	}

	// The calls are counted as the unary methods.
	for _, want := range []struct {
		method, code string
		n            float64
	}{{lockMethod, "OK", 2}, {unlockMethod, "OK", 1}, {unlockMethod, "FailedPrecondition", 1}} {
		if got := rpcCount(t, c.s, want.method, want.code); got != want.n {
			t.Errorf("%s %s counted %v times, want %v", want.method, want.code, got, want.n)
		}
	}
}

// rpcCount returns catalogd_grpc_requests_total for method and code.
func rpcCount(t *testing.T, s *Server, method, code string) float64 {
	t.Helper()
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "catalogd_grpc_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == method && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestLockStreamCancelTimeoutAndEndRemoveTheWait(t *testing.T) {
	c := startCoordNode(t)
	a, b, d := grant(t, c.lease, 30), grant(t, c.lease, 30), grant(t, c.lease, 30)
	c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	sc := openLockStream(t, c)

	sc.lock(7, 0, &catalogpb.LockRequest{Name: "m", Lease: b})
	waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	sc.send(&catalogpb.LockStreamRequest{CallId: 7, Op: &catalogpb.LockStreamRequest_Cancel{Cancel: true}})
	wantCode(t, sc.callErr(7), codes.Canceled, "")
	waitLock(t, c, "m", "b's wait removed", holdersAndWaiters([]int64{a}, nil))

	// A cancel naming no call in flight changes nothing.
	sc.send(&catalogpb.LockStreamRequest{CallId: 99, Op: &catalogpb.LockStreamRequest_Cancel{Cancel: true}})

	sc.lock(8, 300, &catalogpb.LockRequest{Name: "m", Lease: b})
	wantCode(t, sc.callErr(8), codes.DeadlineExceeded, "")
	waitLock(t, c, "m", "b's timed-out wait removed", holdersAndWaiters([]int64{a}, nil))

	// A call id may be used again once its call ended.
	sc.lock(7, 0, &catalogpb.LockRequest{Name: "m", Lease: d, Try: true})
	if resp := sc.response(7); resp.GetLock() == nil || resp.GetLock().Acquired {
		t.Fatalf("try lock on a held lock answered %v", resp)
	}

	// The end of the stream ends its calls: their waits are removed.
	other := openLockStream(t, c)
	other.lock(1, 0, &catalogpb.LockRequest{Name: "m", Lease: d})
	waitLock(t, c, "m", "d waits", holdersAndWaiters([]int64{a}, []int64{d}))
	other.cancel()
	waitLock(t, c, "m", "d's wait removed with its stream", holdersAndWaiters([]int64{a}, nil))
}

func TestLockStreamBadInput(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	held := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	sc := openLockStream(t, c)

	sc.lock(1, 0, &catalogpb.LockRequest{Name: "m", Lease: b})
	waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	// The id of a call in flight.
	sc.lock(1, 0, &catalogpb.LockRequest{Name: "other", Lease: b})
	sc.send(&catalogpb.LockStreamRequest{CallId: 2})
	sc.lock(3, -5, &catalogpb.LockRequest{Name: "other", Lease: b})
	sc.lock(4, 0, &catalogpb.LockRequest{Name: "", Lease: b})
	sc.lock(5, 0, &catalogpb.LockRequest{Name: "other", Lease: 424242})
	sc.unlock(6, &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: 0})

	wantCode(t, sc.callErr(2), codes.InvalidArgument, "INVALID_ARGUMENT", "must be a lock, an unlock or a cancel")
	wantCode(t, sc.callErr(3), codes.InvalidArgument, "INVALID_ARGUMENT", "timeout_ms must be >= 0")
	wantCode(t, sc.callErr(4), codes.InvalidArgument, "INVALID_ARGUMENT", "name")
	wantCode(t, sc.callErr(5), codes.NotFound, "LEASE_NOT_FOUND")
	if err := sc.callErr(6); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unlock with token 0: %v", err)
	}
	// The duplicate got its own error, not the waiting call's answer: the
	// first response for id 1 is the refusal, and the wait goes on.
	wantCode(t, sc.callErr(1), codes.InvalidArgument, "INVALID_ARGUMENT", "call_id 1 names a call still in flight")
	st := waitLock(t, c, "m", "nothing changed", holdersAndWaiters([]int64{a}, []int64{b}))
	if st.Holders[0].Token != held.Token {
		t.Fatalf("holder's token %d, want %d", st.Holders[0].Token, held.Token)
	}
	if st := getLock(t, c, "other"); st != nil {
		t.Fatalf("refused calls left lock %q: %v", "other", st)
	}

	// Call id 0 ends the stream: its responses could not be told apart.
	sc.send(&catalogpb.LockStreamRequest{CallId: 0, Op: &catalogpb.LockStreamRequest_Lock{Lock: &catalogpb.LockRequest{Name: "x", Lease: b}}})
	deadline := time.After(10 * time.Second)
	for {
		sc.mu.Lock()
		ended := sc.ended
		sc.mu.Unlock()
		if ended != nil {
			if status.Code(ended) != codes.InvalidArgument {
				t.Fatalf("stream ended with %v, want InvalidArgument", ended)
			}
			break
		}
		select {
		case <-sc.notify:
		case <-deadline:
			t.Fatal("stream not ended by call_id 0")
		}
	}
	waitLock(t, c, "m", "b's wait removed with the stream", holdersAndWaiters([]int64{a}, nil))
}
