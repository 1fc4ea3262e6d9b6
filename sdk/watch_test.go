package sdk

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A watchTestLog is a revision history shared by fake watch servers: revision r
// holds one kv event of key "k" with mod_revision r.
type watchTestLog struct {
	mu      sync.Mutex
	rev     int64
	compact int64
	changed chan struct{} // closed and replaced on every append
}

func newWatchTestLog() *watchTestLog { return &watchTestLog{changed: make(chan struct{})} }

func (l *watchTestLog) append(n int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev += int64(n)
	close(l.changed)
	l.changed = make(chan struct{})
	return l.rev
}

func (l *watchTestLog) state() (rev, compact int64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev, l.compact, l.changed
}

// A watchTestServer serves Watch over a watchTestLog, one response per revision,
// and can break its stream or cancel a watch as too slow on cue.
type watchTestServer struct {
	catalogpb.UnimplementedWatchServer
	log  *watchTestLog
	addr string
	id   uint64

	mu sync.Mutex
	// breakAfter ends the next stream with Unavailable instead of sending
	// its breakAfter-th event response (0: never).
	breakAfter int
	// tooSlowAfter cancels the next watch with WATCH_TOO_SLOW once it has
	// sent that many event responses (0: never).
	tooSlowAfter int
	// reqC receives every request.
	reqC chan *catalogpb.WatchRequest
}

func startWatchTestServer(t *testing.T, log *watchTestLog, id uint64) *watchTestServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &watchTestServer{log: log, addr: lis.Addr().String(), id: id, reqC: make(chan *catalogpb.WatchRequest, 1000)}
	srv := grpc.NewServer()
	catalogpb.RegisterWatchServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *watchTestServer) take(n *int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *n == 1 {
		*n = 0
		return true
	}
	if *n > 1 {
		*n--
	}
	return false
}

type watchTestEntry struct {
	id, next int64
}

func (f *watchTestServer) header(rev int64) *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: 1, MemberId: f.id, Revision: rev}
}

func (f *watchTestServer) Watch(srv catalogpb.Watch_WatchServer) error {
	reqs := make(chan *catalogpb.WatchRequest)
	go func() {
		for {
			req, err := srv.Recv()
			if err != nil {
				close(reqs)
				return
			}
			f.reqC <- req
			select {
			case reqs <- req:
			case <-srv.Context().Done():
				return
			}
		}
	}()
	var watches []*watchTestEntry
	for {
		rev, compact, changed := f.log.state()
		for _, w := range watches {
			for ; w.next <= rev; w.next++ {
				if w.id == 0 {
					break
				}
				if f.take(&f.breakAfter) {
					return status.Error(codes.Unavailable, "fake: stream broken")
				}
				ev := &catalogpb.Event{Kind: "kv", Kv: &catalogpb.KeyValue{Key: []byte("k"), ModRevision: w.next}}
				if err := srv.Send(&catalogpb.WatchResponse{Header: f.header(w.next), WatchId: w.id, Events: []*catalogpb.Event{ev}}); err != nil {
					return err
				}
				if f.take(&f.tooSlowAfter) {
					if err := srv.Send(&catalogpb.WatchResponse{Header: f.header(w.next), WatchId: w.id, Canceled: true, Reason: catalogpb.ErrorReason_WATCH_TOO_SLOW}); err != nil {
						return err
					}
					w.id = 0
				}
			}
		}
		select {
		case <-changed:
		case req, ok := <-reqs:
			if !ok {
				return nil
			}
			var resps []*catalogpb.WatchResponse
			switch r := req.Request.(type) {
			case *catalogpb.WatchRequest_CreateRequest:
				cr := r.CreateRequest
				start := cr.StartRevision
				if start == 0 {
					start = rev + 1
				}
				switch {
				case cr.Filter != catalogpb.WatchCreateRequest_KV:
					resps = append(resps, &catalogpb.WatchResponse{Header: f.header(rev), WatchId: cr.WatchId, Created: true, Canceled: true,
						Reason: catalogpb.ErrorReason_INVALID_ARGUMENT, CancelReason: "fake: filter must be KV"})
				case start <= compact:
					resps = append(resps, &catalogpb.WatchResponse{Header: f.header(rev), WatchId: cr.WatchId, Created: true, Canceled: true,
						Reason: catalogpb.ErrorReason_COMPACTED, CompactRevision: compact, CancelReason: "fake: compacted"})
				default:
					watches = append(watches, &watchTestEntry{id: cr.WatchId, next: start})
					resps = append(resps, &catalogpb.WatchResponse{Header: f.header(start - 1), WatchId: cr.WatchId, Created: true})
				}
			case *catalogpb.WatchRequest_CancelRequest:
				for _, w := range watches {
					if w.id == r.CancelRequest.WatchId {
						w.id = 0
						resps = append(resps, &catalogpb.WatchResponse{Header: f.header(rev), WatchId: r.CancelRequest.WatchId, Canceled: true})
					}
				}
			case *catalogpb.WatchRequest_ProgressRequest:
				for _, w := range watches {
					if w.id != 0 {
						resps = append(resps, &catalogpb.WatchResponse{Header: f.header(w.next - 1), WatchId: w.id, ProgressNotify: true})
					}
				}
			}
			for _, resp := range resps {
				if err := srv.Send(resp); err != nil {
					return err
				}
			}
		}
	}
}

// creates returns the create requests the server received so far, waiting
// until there are at least n.
func (f *watchTestServer) requests(t *testing.T, n int, pred func(*catalogpb.WatchRequest) bool) []*catalogpb.WatchRequest {
	t.Helper()
	var got []*catalogpb.WatchRequest
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case req := <-f.reqC:
			if pred(req) {
				got = append(got, req)
			}
		case <-timeout:
			t.Fatalf("server got %d matching requests, want %d", len(got), n)
		}
	}
	return got
}

func isWatchCreate(r *catalogpb.WatchRequest) bool { return r.GetCreateRequest() != nil }
func isWatchCancel(r *catalogpb.WatchRequest) bool { return r.GetCancelRequest() != nil }

// readWatchRevisions reads wch until it has seen revision to, and asserts that
// revisions from..to came each exactly once, in order.
func readWatchRevisions(t *testing.T, wch WatchChan, from, to int64) []WatchResponse {
	t.Helper()
	var resps []WatchResponse
	want := from
	timeout := time.After(10 * time.Second)
	for want <= to {
		select {
		case r, ok := <-wch:
			if !ok {
				t.Fatalf("watch channel closed at revision %d, want up to %d", want-1, to)
			}
			if r.Err != nil {
				t.Fatalf("watch ended at revision %d: %v", want-1, r.Err)
			}
			resps = append(resps, r)
			for _, e := range r.Events {
				if got := e.Kv.ModRevision; got != want {
					t.Fatalf("got revision %d, want %d (a gap, a duplicate or out of order)", got, want)
				}
				want++
			}
		case <-timeout:
			t.Fatalf("no revision %d within 10s", want)
		}
	}
	return resps
}

func newWatchTestClient(t *testing.T, endpoints ...string) *Client {
	t.Helper()
	return newTestClient(t, Config{Endpoints: endpoints})
}

func TestWatchResumesOnAnotherEndpointAfterABrokenStream(t *testing.T) {
	log := newWatchTestLog()
	log.append(10)
	a, b := startWatchTestServer(t, log, 1), startWatchTestServer(t, log, 2)
	a.breakAfter, b.breakAfter = 3, 3
	c := newWatchTestClient(t, a.addr, b.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(1))

	readWatchRevisions(t, wch, 1, 10)
	log.append(10)
	readWatchRevisions(t, wch, 11, 20)

	// The first stream broke after 2 revisions: the next create asked for
	// revision 3 on.
	var creates []*catalogpb.WatchRequest
	for _, f := range []*watchTestServer{a, b} {
	drain:
		for {
			select {
			case r := <-f.reqC:
				if isWatchCreate(r) {
					creates = append(creates, r)
				}
			default:
				break drain
			}
		}
	}
	var starts []int64
	for _, r := range creates {
		starts = append(starts, r.GetCreateRequest().StartRevision)
	}
	found := false
	for _, s := range starts {
		found = found || s == 3
	}
	if len(creates) < 2 || !found {
		t.Fatalf("create requests asked for start revisions %v, want a resume from 3", starts)
	}
}

func TestWatchResumesAfterTooSlow(t *testing.T) {
	log := newWatchTestLog()
	log.append(10)
	f := startWatchTestServer(t, log, 1)
	f.tooSlowAfter = 4
	c := newWatchTestClient(t, f.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(1))
	readWatchRevisions(t, wch, 1, 10)
	creates := f.requests(t, 2, isWatchCreate)
	if got := creates[1].GetCreateRequest(); got.StartRevision != 5 || got.WatchId == creates[0].GetCreateRequest().WatchId {
		t.Fatalf("after WATCH_TOO_SLOW at revision 4, the watch was created again as %v, want start revision 5 under a new id", got)
	}
}

func TestWatchFromCompactedRevisionEnds(t *testing.T) {
	log := newWatchTestLog()
	log.append(10)
	log.compact = 5
	f := startWatchTestServer(t, log, 1)
	c := newWatchTestClient(t, f.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(3))
	r, ok := <-wch
	if !ok || !errors.Is(r.Err, ErrCompacted) || r.CompactRevision != 5 {
		t.Fatalf("got %+v, want ErrCompacted with CompactRevision 5", r)
	}
	if _, ok := <-wch; ok {
		t.Fatal("the channel stays open after ErrCompacted")
	}
}

func TestWatchRefusedFilterEnds(t *testing.T) {
	f := startWatchTestServer(t, newWatchTestLog(), 1)
	c := newWatchTestClient(t, f.addr)
	r := <-c.Watch(t.Context(), WatchLeases())
	if !errors.Is(r.Err, ErrInvalidArgument) || status.Code(r.Err) != codes.InvalidArgument {
		t.Fatalf("got %+v, want ErrInvalidArgument", r)
	}
	r = <-c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(-2))
	if !errors.Is(r.Err, ErrInvalidArgument) {
		t.Fatalf("negative start revision: got %+v, want ErrInvalidArgument", r)
	}
}

func TestWatchContextEndCancelsOnTheServer(t *testing.T) {
	log := newWatchTestLog()
	f := startWatchTestServer(t, log, 1)
	c := newWatchTestClient(t, f.addr)
	keep := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(1))
	ctx, cancel := context.WithCancel(t.Context())
	gone := c.Watch(ctx, WatchKey("k"))
	creates := f.requests(t, 2, isWatchCreate)
	cancel()
	for range gone {
	}
	cancels := f.requests(t, 1, isWatchCancel)
	goneID := creates[1].GetCreateRequest().WatchId
	if creates[0].GetCreateRequest().Key != nil {
		goneID = creates[0].GetCreateRequest().WatchId
	}
	if got := cancels[0].GetCancelRequest().WatchId; got != goneID {
		t.Fatalf("cancelled watch %d, want %d", got, goneID)
	}
	log.append(1)
	readWatchRevisions(t, keep, 1, 1)
}

func TestWatchSlowReaderIsPausedAndResumed(t *testing.T) {
	defer func(n int) { watchPendingResponses = n }(watchPendingResponses)
	watchPendingResponses = 4
	log := newWatchTestLog()
	log.append(40)
	f := startWatchTestServer(t, log, 1)
	c := newWatchTestClient(t, f.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(1))
	// Unread, the watch is cancelled on the server once more than 4
	// responses wait (and one more may wait in the channel send).
	f.requests(t, 1, isWatchCancel)
	readWatchRevisions(t, wch, 1, 40)
	creates := f.requests(t, 1, isWatchCreate) // the first was consumed above
	if got := creates[0].GetCreateRequest().StartRevision; got != 6 && got != 7 {
		t.Fatalf("the paused watch resumed from %d, want 6 or 7 (right after the responses it held)", got)
	}
}

func TestWatchRequestProgress(t *testing.T) {
	log := newWatchTestLog()
	log.append(3)
	f := startWatchTestServer(t, log, 1)
	c := newWatchTestClient(t, f.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""), WithStartRevision(1))
	readWatchRevisions(t, wch, 1, 3)
	if err := c.RequestProgress(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-wch:
		if !r.Progress || r.Header.Revision != 3 || len(r.Events) > 0 {
			t.Fatalf("got %+v, want a progress notification at revision 3", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification")
	}
}

func TestWatchEndsWhenTheClientCloses(t *testing.T) {
	f := startWatchTestServer(t, newWatchTestLog(), 1)
	c := newWatchTestClient(t, f.addr)
	wch := c.Watch(t.Context(), WatchPrefix(""))
	f.requests(t, 1, isWatchCreate)
	c.Close()
	select {
	case r := <-wch:
		if r.Err == nil {
			t.Fatalf("got %+v, want an error", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end")
	}
	if r := <-c.Watch(t.Context(), WatchPrefix("")); r.Err == nil {
		t.Fatal("a watch on a closed client did not fail")
	}
}

// BenchmarkWatchDelivery measures how long an event takes from the server's
// send to the SDK caller (the fake server does no I/O of its own).
func BenchmarkWatchDelivery(b *testing.B) {
	log := newWatchTestLog()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f := &watchTestServer{log: log, addr: lis.Addr().String(), id: 1, reqC: make(chan *catalogpb.WatchRequest, 1<<20)}
	srv := grpc.NewServer()
	catalogpb.RegisterWatchServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	c, err := New(Config{Endpoints: []string{f.addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	wch := c.Watch(context.Background(), WatchPrefix(""))
	for len(f.reqC) == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	b.ResetTimer()
	for i := range b.N {
		rev := log.append(1)
		r := <-wch
		if len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
			b.Fatalf("iteration %d: got %+v", i, r)
		}
	}
}
