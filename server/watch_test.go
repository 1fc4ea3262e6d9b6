package server

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

// A testWatch is one Watch stream; a goroutine reads every response, and
// responses are handed out per watch id.
type testWatch struct {
	t      *testing.T
	stream catalogpb.Watch_WatchClient
	respC  chan *catalogpb.WatchResponse
	err    atomic.Value
	// stash holds responses read while looking for another watch's.
	stash map[int64][]*catalogpb.WatchResponse
}

func openWatchStream(t *testing.T, addr string) *testWatch {
	t.Helper()
	stream := rawWatchStream(t, addr)
	tw := &testWatch{t: t, stream: stream, respC: make(chan *catalogpb.WatchResponse, 1<<16), stash: map[int64][]*catalogpb.WatchResponse{}}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				tw.err.Store(err)
				close(tw.respC)
				return
			}
			tw.respC <- r
		}
	}()
	return tw
}

// rawWatchStream opens a Watch stream that nothing reads.
func rawWatchStream(t *testing.T, addr string) catalogpb.Watch_WatchClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := catalogpb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func (tw *testWatch) send(req *catalogpb.WatchRequest) {
	tw.t.Helper()
	if err := tw.stream.Send(req); err != nil {
		tw.t.Fatalf("send %v: %v", req, err)
	}
}

func (tw *testWatch) createReq(req *catalogpb.WatchCreateRequest) {
	tw.t.Helper()
	tw.send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: req}})
}

// create sends req (which names its watch id) and returns the answer.
func (tw *testWatch) create(req *catalogpb.WatchCreateRequest) *catalogpb.WatchResponse {
	tw.t.Helper()
	tw.createReq(req)
	r := tw.next(req.WatchId)
	if !r.Created {
		tw.t.Fatalf("first response of watch %d is not created: %v", req.WatchId, r)
	}
	return r
}

// mustCreate is create for a watch that must be accepted.
func (tw *testWatch) mustCreate(req *catalogpb.WatchCreateRequest) *catalogpb.WatchResponse {
	tw.t.Helper()
	r := tw.create(req)
	if r.Canceled {
		tw.t.Fatalf("watch %v refused: %v", req, r)
	}
	return r
}

func (tw *testWatch) cancel(id int64) {
	tw.t.Helper()
	tw.send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CancelRequest{CancelRequest: &catalogpb.WatchCancelRequest{WatchId: id}}})
}

func (tw *testWatch) requestProgress() {
	tw.t.Helper()
	tw.send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_ProgressRequest{ProgressRequest: &catalogpb.WatchProgressRequest{}}})
}

// next returns the next response of watch id, waiting up to 10s.
func (tw *testWatch) next(id int64) *catalogpb.WatchResponse {
	tw.t.Helper()
	r, ok := tw.nextWithin(id, 10*time.Second)
	if !ok {
		tw.t.Fatalf("no response for watch %d within 10s (stream error: %v)", id, tw.err.Load())
	}
	return r
}

func (tw *testWatch) nextWithin(id int64, d time.Duration) (*catalogpb.WatchResponse, bool) {
	if s := tw.stash[id]; len(s) > 0 {
		tw.stash[id] = s[1:]
		return s[0], true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-tw.respC:
			if !ok {
				return nil, false
			}
			if r.WatchId == id {
				return r, true
			}
			tw.stash[r.WatchId] = append(tw.stash[r.WatchId], r)
		case <-timer.C:
			return nil, false
		}
	}
}

// collect returns the responses of watch id up to the first whose header
// revision reaches rev; a canceled response fails the test.
func (tw *testWatch) collect(id, rev int64) []*catalogpb.WatchResponse {
	tw.t.Helper()
	var out []*catalogpb.WatchResponse
	for {
		r := tw.next(id)
		if r.Canceled {
			tw.t.Fatalf("watch %d canceled while waiting for revision %d: %v", id, rev, r)
		}
		out = append(out, r)
		if r.GetHeader().GetRevision() >= rev {
			return out
		}
	}
}

// eventRev is the revision of a kv event.
func eventRev(e *catalogpb.Event) int64 { return e.GetKv().GetModRevision() }

// checkRevisions asserts that resps hold the events of every revision from
// from to to, each exactly once, in order, each revision whole in one
// response, and that each header covers its events.
func checkRevisions(t *testing.T, resps []*catalogpb.WatchResponse, from, to int64) {
	t.Helper()
	want := from
	for _, r := range resps {
		if len(r.Events) == 0 {
			continue
		}
		cur := int64(-1)
		for _, e := range r.Events {
			rev := eventRev(e)
			switch {
			case rev == cur:
			case rev == want:
				cur = rev
				want++
			default:
				t.Fatalf("got an event of revision %d, want revision %d next (out of order, repeated, split across responses, or a gap); response header revision %d, %d events",
					rev, want, r.GetHeader().GetRevision(), len(r.Events))
			}
		}
		if h := r.GetHeader().GetRevision(); h < cur {
			t.Fatalf("response header revision %d is below its last event's %d", h, cur)
		}
	}
	if want-1 != to {
		t.Fatalf("events cover revisions %d..%d, want %d..%d", from, want-1, from, to)
	}
}

// eventsOf flattens the events of resps.
func eventsOf(resps []*catalogpb.WatchResponse) []*catalogpb.Event {
	var evs []*catalogpb.Event
	for _, r := range resps {
		evs = append(evs, r.Events...)
	}
	return evs
}

func mustPut(t *testing.T, kv catalogpb.KVClient, key, value string) int64 {
	t.Helper()
	resp, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.GetHeader().GetRevision()
}

// putMany writes n keys under prefix and returns the last revision.
// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func putMany(t *testing.T, kv catalogpb.KVClient, prefix string, n int) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		rev = mustPut(t, kv, fmt.Sprintf("%s%04d", prefix, i), "v")
	}
	return rev
}

// storeMax raises v to rev.
func storeMax(v *atomic.Int64, rev int64) {
	for {
		cur := v.Load()
		if rev <= cur || v.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func kvWatch(id int64, prefix string) *catalogpb.WatchCreateRequest {
	return &catalogpb.WatchCreateRequest{WatchId: id, Filter: catalogpb.WatchCreateRequest_KV, Key: []byte(prefix), Prefix: true}
}

func TestWatchDeliversWholeRevisionsInOrder(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "w", t.TempDir()))
	kv := kvClient(t, s.ClientAddr())
	tw := openWatchStream(t, s.ClientAddr())
	base := tw.mustCreate(kvWatch(1, "")).GetHeader().GetRevision()
	tw.mustCreate(&catalogpb.WatchCreateRequest{WatchId: 2, Filter: catalogpb.WatchCreateRequest_KV, Key: []byte("k1"), PrevKv: true})
	tw.mustCreate(kvWatch(3, "t/"))

	mustPut(t, kv, "k1", "v1")
	mustPut(t, kv, "k1", "v2")
	putOp := func(k string) *catalogpb.TxnOp {
		return &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: []byte(k), Value: []byte("x")}}}
	}
	txn, err := kv.Txn(t.Context(), &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{putOp("t/a"), putOp("t/b"), putOp("t/c")}})
	if err != nil {
		t.Fatal(err)
	}
	txnRev := txn.Header.Revision
	del, err := kv.Delete(t.Context(), &catalogpb.DeleteRequest{Key: []byte("t/"), Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	delRev := del.Header.Revision
	last := mustPut(t, kv, "other", "x")

	all := tw.collect(1, last)
	checkRevisions(t, all, base+1, last)
	for _, e := range eventsOf(all) {
		if e.PrevKv != nil {
			t.Errorf("watch without prev_kv got an event with prev_kv: %v", e)
		}
	}
	perRev := map[int64]int{}
	for _, e := range eventsOf(all) {
		perRev[eventRev(e)]++
	}
	if perRev[txnRev] != 3 || perRev[delRev] != 3 {
		t.Errorf("events per revision %v: want 3 for the transaction (rev %d) and 3 for the range delete (rev %d)", perRev, txnRev, delRev)
	}

	k1 := eventsOf(tw.collect(2, base+2))
	if len(k1) != 2 || string(k1[0].Kv.Value) != "v1" || string(k1[1].Kv.Value) != "v2" {
		t.Fatalf("watch of k1 got %v, want puts of v1 then v2", k1)
	}
	if k1[0].PrevKv != nil || string(k1[1].GetPrevKv().GetValue()) != "v1" {
		t.Errorf("prev_kv of k1's events: %v and %v, want none then v1", k1[0].PrevKv, k1[1].PrevKv)
	}

	tr := tw.collect(3, delRev)
	checkRevisions(t, tr, txnRev, delRev)
	if len(tr) != 2 {
		t.Errorf("prefix t/ watch got %d responses, want 2 (one per revision): %v", len(tr), tr)
	}
	for i, typ := range []catalogpb.Event_Type{catalogpb.Event_PUT, catalogpb.Event_DELETE} {
		for _, e := range tr[i].Events {
			if e.Type != typ || !bytes.HasPrefix(e.Kv.Key, []byte("t/")) {
				t.Errorf("response %d: event %v, want a %v of a t/ key", i, e, typ)
			}
		}
	}
}

func TestWatchReplayJoinsLiveWithoutGapOrDuplicate(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "w", t.TempDir()))
	// Many small chunks: many chances to race the writers when a replay
	// joins the live events.
	s.watches.replayChunk = 7
	kv := kvClient(t, s.ClientAddr())
	first := mustPut(t, kv, "a/0000", "v")
	putMany(t, kv, "a/", 60)

	// Watches start from the history while a writer keeps writing.
	var wg sync.WaitGroup
	var last atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				resp, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte(fmt.Sprintf("b/%d/%04d", w, i)), Value: []byte("v")})
				if err != nil {
					t.Errorf("put: %v", err)
					return
				}
				storeMax(&last, resp.Header.Revision)
			}
		}()
	}
	tw := openWatchStream(t, s.ClientAddr())
	var starts []int64
	for i := range 40 {
		start := first + int64(i*7%60)
		starts = append(starts, start)
		req := kvWatch(int64(i+1), "")
		req.StartRevision = start
		if got := tw.mustCreate(req).GetHeader().GetRevision(); got != start-1 {
			t.Errorf("created header revision %d, want start revision - 1 = %d", got, start-1)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for i, start := range starts {
		checkRevisions(t, tw.collect(int64(i+1), last.Load()), start, last.Load())
	}

	// A start revision in the future waits for it.
	future := last.Load() + 3
	req := kvWatch(999, "")
	req.StartRevision = future
	tw.mustCreate(req)
	var end int64
	for i := range 5 {
		end = mustPut(t, kv, fmt.Sprintf("c/%d", i), "v")
	}
	checkRevisions(t, tw.collect(999, end), future, end)
}

func TestWatchFromCompactedRevision(t *testing.T) {
	cfg := singleNodeConfig(t, "w", t.TempDir())
	cfg.EventHistory = 10
	s := startSingleNode(t, cfg)
	kv := kvClient(t, s.ClientAddr())
	last := putMany(t, kv, "k/", 30)
	compact := s.sm.CompactRevision()
	if compact != last-10 {
		t.Fatalf("compact revision %d, want %d (history of 10 revisions)", compact, last-10)
	}

	tw := openWatchStream(t, s.ClientAddr())
	for _, start := range []int64{1, compact} {
		req := kvWatch(start, "")
		req.StartRevision = start
		r := tw.create(req)
		if !r.Canceled || r.Reason != catalogpb.ErrorReason_COMPACTED || r.CompactRevision != compact {
			t.Fatalf("watch from %d: got %v, want canceled with COMPACTED and compact_revision %d", start, r, compact)
		}
		if !strings.Contains(r.CancelReason, fmt.Sprintf("oldest revision held is %d", compact+1)) {
			t.Errorf("cancel reason %q does not give the oldest revision held (%d)", r.CancelReason, compact+1)
		}
	}
	// The stream lives on: the oldest revision held replays.
	req := kvWatch(100, "")
	req.StartRevision = compact + 1
	tw.mustCreate(req)
	checkRevisions(t, tw.collect(100, last), compact+1, last)
}

func TestWatchFiltersByKind(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "w", t.TempDir()))
	ctx := t.Context()
	conn := dialServer(t, s)
	reg, leases, kv := catalogpb.NewRegistryClient(conn), catalogpb.NewLeaseClient(conn), catalogpb.NewKVClient(conn)
	tw := openWatchStream(t, s.ClientAddr())
	svc, shard := catalogpb.WatchCreateRequest_SERVICE, catalogpb.WatchCreateRequest_SHARD_MAP
	watches := []struct {
		req  *catalogpb.WatchCreateRequest
		want []string // kind:key of the events, in order
	}{
		{&catalogpb.WatchCreateRequest{Filter: svc, Service: "orders"}, []string{"service:orders", "instance:orders/a"}},
		{&catalogpb.WatchCreateRequest{Filter: svc}, []string{"service:orders", "service:orders-eu", "instance:orders/a", "instance:orders-eu/b"}},
		{&catalogpb.WatchCreateRequest{Filter: shard, Service: "orders"}, []string{"shard_map:orders"}},
		{&catalogpb.WatchCreateRequest{Filter: shard}, []string{"shard_map:orders", "shard_map:orders-eu"}},
		{&catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_LEASE}, []string{"lease:77", "lease:77"}},
		{kvWatch(0, ""), []string{"kv:x"}},
	}
	for i, w := range watches {
		w.req.WatchId = int64(i + 1)
		tw.mustCreate(w.req)
	}

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"orders", "orders-eu"} {
		must(reg.PutService(ctx, &catalogpb.PutServiceRequest{Service: &catalogpb.Service{Name: name}}))
	}
	must(reg.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders", Id: "a", Address: "10.0.0.1:80"}}))
	must(reg.Register(ctx, &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{Service: "orders-eu", Id: "b", Address: "10.0.0.2:80"}}))
	for _, name := range []string{"orders", "orders-eu"} {
		must(reg.SetShardMap(ctx, &catalogpb.SetShardMapRequest{Map: &catalogpb.ShardMap{Service: name, Shards: []*catalogpb.Shard{{Id: "s1"}}}}))
	}
	must(leases.Grant(ctx, &catalogpb.LeaseGrantRequest{Id: 77, TtlSeconds: 30}))
	must(kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("x"), Value: []byte("1")}))
	revoke, err := leases.Revoke(ctx, &catalogpb.LeaseRevokeRequest{Id: 77})
	if err != nil {
		t.Fatal(err)
	}
	last := revoke.Header.Revision

	// The bookmarks come after every event the watches were sent.
	tw.requestProgress()
	for i, w := range watches {
		id := int64(i + 1)
		var got []string
		for {
			r := tw.next(id)
			if r.ProgressNotify {
				if r.Header.Revision != last {
					t.Errorf("watch %d: bookmark at %d, want %d", id, r.Header.Revision, last)
				}
				break
			}
			for _, e := range r.Events {
				got = append(got, e.Kind+":"+string(e.Kv.GetKey()))
			}
		}
		if !slices.Equal(got, w.want) {
			t.Errorf("watch %d (%v): events %v, want %v", id, w.req, got, w.want)
		}
	}
}

func TestWatchSlowWatcherIsCancelledWithoutHoldingWrites(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "w", t.TempDir()))
	s.watches.bufferEvents = 20
	kv := kvClient(t, s.ClientAddr())

	fast := openWatchStream(t, s.ClientAddr())
	base := fast.mustCreate(kvWatch(1, "")).GetHeader().GetRevision()
	slow := rawWatchStream(t, s.ClientAddr())
	if err := slow.Send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: kvWatch(7, "")}}); err != nil {
		t.Fatal(err)
	}
	if r, err := slow.Recv(); err != nil || !r.Created {
		t.Fatalf("create slow watch: %v %v", r, err)
	}

	// Nobody reads the slow stream while 8 MB of events go by: gRPC flow
	// control stops its sends, its queue overflows, and the writes go on.
	value := strings.Repeat("x", 8<<10)
	var wg sync.WaitGroup
	var last atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 125 {
				resp, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte(fmt.Sprintf("k/%d/%d", w, i)), Value: []byte(value)})
				if err != nil {
					t.Errorf("put: %v", err)
					return
				}
				storeMax(&last, resp.Header.Revision)
			}
		}()
	}
	wg.Wait()
	end := last.Load()
	checkRevisions(t, fast.collect(1, end), base+1, end)

	// The slow watcher got a prefix of the revisions, then the cancel
	// naming the last revision it was sent.
	var resps []*catalogpb.WatchResponse
	var canceled *catalogpb.WatchResponse
	for canceled == nil {
		r, err := slow.Recv()
		if err != nil {
			t.Fatalf("slow stream: %v", err)
		}
		if r.Canceled {
			canceled = r
		} else {
			resps = append(resps, r)
		}
	}
	if canceled.Reason != catalogpb.ErrorReason_WATCH_TOO_SLOW {
		t.Fatalf("slow watch ended with %v, want WATCH_TOO_SLOW", canceled)
	}
	sent := base
	if len(resps) > 0 {
		sent = resps[len(resps)-1].Header.Revision
	}
	if canceled.Header.Revision != sent || sent >= end {
		t.Fatalf("canceled header revision %d, want the last revision sent (%d), below the last written (%d)", canceled.Header.Revision, sent, end)
	}
	checkRevisions(t, resps, base+1, sent)

	// Resuming from there on the same stream delivers the rest exactly once.
	resume := kvWatch(8, "")
	resume.StartRevision = sent + 1
	if err := slow.Send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: resume}}); err != nil {
		t.Fatal(err)
	}
	resps = nil
	for {
		r, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.WatchId != 8 || r.Created {
			continue
		}
		resps = append(resps, r)
		if r.Header.Revision >= end {
			break
		}
	}
	checkRevisions(t, resps, sent+1, end)
}

func TestWatchRefusesBadRequestsAndKeepsTheStream(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "w", t.TempDir()))
	kv := kvClient(t, s.ClientAddr())
	tw := openWatchStream(t, s.ClientAddr())
	tw.mustCreate(kvWatch(1, "a/"))

	kvF := catalogpb.WatchCreateRequest_KV
	for i, tt := range []struct {
		name string
		req  *catalogpb.WatchCreateRequest
		want string
	}{
		{"unspecified filter", &catalogpb.WatchCreateRequest{}, "filter must be one of KV, SERVICE, SHARD_MAP, LEASE, LOCK, BARRIER, QUEUE, got FILTER_UNSPECIFIED"},
		{"unknown filter", &catalogpb.WatchCreateRequest{Filter: 99, Key: []byte("a")}, "filter must be one of KV, SERVICE, SHARD_MAP, LEASE, LOCK, BARRIER, QUEUE, got 99"},
		{"kv without key", &catalogpb.WatchCreateRequest{Filter: kvF}, "needs a key, or prefix set"},
		{"kv with service", &catalogpb.WatchCreateRequest{Filter: kvF, Key: []byte("a"), Service: "orders"}, "service is not used by a KV watch"},
		{"service with key", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_SERVICE, Key: []byte("a")}, "key and prefix are only used by KV, LOCK, BARRIER and QUEUE watches"},
		{"bad service name", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_SHARD_MAP, Service: "Orders!"}, "service must be 1..63 characters"},
		{"lease with service", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_LEASE, Service: "orders"}, "service is not used by a LEASE watch"},
		{"negative start", &catalogpb.WatchCreateRequest{Filter: kvF, Prefix: true, StartRevision: -1}, "start_revision must be >= 0"},
		{"negative id", &catalogpb.WatchCreateRequest{Filter: kvF, Prefix: true, WatchId: -3}, "watch_id must be >= 0"},
		{"key too large", &catalogpb.WatchCreateRequest{Filter: kvF, Key: make([]byte, 5000)}, "key must be at most"},
		{"lock without key", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_LOCK}, "a LOCK watch needs key (a lock name)"},
		{"barrier name too large", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_BARRIER, Key: make([]byte, 513)}, "at most 512 bytes, got 513"},
		{"queue with service", &catalogpb.WatchCreateRequest{Filter: catalogpb.WatchCreateRequest_QUEUE, Key: []byte("q"), Service: "orders"}, "service is not used by a QUEUE watch"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tw.t = t
			req := tt.req
			if req.WatchId == 0 {
				req.WatchId = int64(100 + i)
			}
			r := tw.create(req)
			if !r.Canceled || r.Reason != catalogpb.ErrorReason_INVALID_ARGUMENT || !strings.Contains(r.CancelReason, tt.want) {
				t.Errorf("got %v, want canceled with INVALID_ARGUMENT and %q", r, tt.want)
			}
		})
	}
	tw.t = t

	// A watch id in use is refused; the watch that holds it goes on.
	if r := tw.create(kvWatch(1, "b/")); !r.Canceled || r.Reason != catalogpb.ErrorReason_WATCH_ID_EXISTS {
		t.Fatalf("duplicate watch id: %v, want canceled with WATCH_ID_EXISTS", r)
	}
	tw.cancel(42)
	if r := tw.next(42); !r.Canceled || r.Reason != catalogpb.ErrorReason_WATCH_NOT_FOUND {
		t.Fatalf("cancel of an unknown watch: %v, want WATCH_NOT_FOUND", r)
	}
	rev := mustPut(t, kv, "a/x", "1")
	if evs := eventsOf(tw.collect(1, rev)); len(evs) != 1 || string(evs[0].Kv.Key) != "a/x" {
		t.Fatalf("watch 1 after the refusals got %v, want the put of a/x", evs)
	}

	// Server-chosen ids are unique on the stream.
	tw.createReq(&catalogpb.WatchCreateRequest{Filter: kvF, Key: []byte("c")})
	tw.createReq(&catalogpb.WatchCreateRequest{Filter: kvF, Key: []byte("d")})
	ids := map[int64]bool{}
	for len(ids) < 2 {
		r := <-tw.respC
		if !r.Created || r.Canceled || r.WatchId == 1 || ids[r.WatchId] {
			t.Fatalf("server-chosen id: %v (have %v)", r, ids)
		}
		ids[r.WatchId] = true
	}

	// A cancelled watch gets its canceled response and nothing after it.
	tw.mustCreate(kvWatch(50, "a/"))
	tw.cancel(50)
	if r := tw.next(50); !r.Canceled || r.Reason != catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Fatalf("cancel: %v, want a canceled response", r)
	}
	rev = mustPut(t, kv, "a/y", "1")
	tw.collect(1, rev)
	tw.requestProgress()
	if r := tw.next(1); !r.ProgressNotify || r.Header.Revision < rev {
		t.Fatalf("progress after the put: %v", r)
	}
	if s := tw.stash[50]; len(s) > 0 {
		t.Fatalf("a cancelled watch got %v", s)
	}
	// Its id is free again.
	tw.mustCreate(kvWatch(50, "a/"))
}

func TestWatchProgressNotifications(t *testing.T) {
	cfg := singleNodeConfig(t, "w", t.TempDir())
	cfg.WatchProgressInterval = 100 * time.Millisecond
	s := startSingleNode(t, cfg)
	kv := kvClient(t, s.ClientAddr())
	tw := openWatchStream(t, s.ClientAddr())
	notify := kvWatch(1, "a/")
	notify.ProgressNotify = true
	tw.mustCreate(notify)
	tw.mustCreate(kvWatch(2, "a/"))
	other := mustPut(t, kv, "b/1", "x") // a revision no watch wants

	// Idle, watch 1 gets bookmarks at the current revision; watch 2 did not
	// ask for them.
	for range 2 {
		r := tw.next(1)
		if !r.ProgressNotify || len(r.Events) > 0 || r.Header.Revision != other {
			t.Fatalf("idle watch got %v, want a bookmark at revision %d", r, other)
		}
	}
	if s := tw.stash[2]; len(s) > 0 {
		t.Fatalf("a watch without progress_notify got %v", s)
	}

	// A progress request answers for every watch of the stream at once.
	rev := mustPut(t, kv, "b/2", "x")
	tw.requestProgress()
	for _, id := range []int64{1, 2} {
		for {
			r := tw.next(id)
			if r.ProgressNotify && r.Header.Revision == rev {
				break
			}
			if !r.ProgressNotify || r.Header.Revision > rev {
				t.Fatalf("watch %d after a progress request: %v, want a bookmark at %d", id, r, rev)
			}
		}
	}
}

func TestWithoutPrevKVKeepsEveryOtherField(t *testing.T) {
	// withoutPrevKV copies fields by name: a field added to Event must be
	// added there too.
	e := &catalogpb.Event{}
	m := e.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfMessage(l.NewElement().Message()))
			continue
		case fd.IsList():
			t.Fatalf("list field %s of kind %v: teach this test", fd.Name(), fd.Kind())
		}
		switch fd.Kind() {
		case protoreflect.MessageKind:
			m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		case protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(1))
		case protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("x"))
		default:
			t.Fatalf("field %s of kind %v: teach this test", fd.Name(), fd.Kind())
		}
	}
	c := withoutPrevKV(e).ProtoReflect()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if has := c.Has(fd); has != (fd.Name() != "prev_kv") {
			t.Errorf("field %s: present in the copy = %v", fd.Name(), has)
		}
	}
}

func TestWatchOnFollowerCatchesUpAfterSnapshot(t *testing.T) {
	// Cut off, the follower misses more entries than the leader's log keeps
	// (SnapshotCount 200, CatchUpEntries 50): it catches up by snapshot, and
	// its watch replays the revisions it missed from the snapshot's events,
	// unless the snapshot's history no longer holds them.
	for _, history := range []int64{100000, 100} {
		t.Run(fmt.Sprintf("history %d", history), func(t *testing.T) {
			var isolated atomic.Uint64
			c := newTestClusterWith(t, 3, func(cfg *Config) {
				cfg.EventHistory = history
				cfg.Drop = func(from, to uint64) bool {
					id := isolated.Load()
					return id != 0 && (from == id || to == id)
				}
			})
			f := c.follower()
			kv := kvClient(t, c.leader().ClientAddr())
			first := mustPut(t, kv, "k/first", "v")
			tw := openWatchStream(t, f.ClientAddr())
			req := kvWatch(1, "")
			req.StartRevision = first
			tw.mustCreate(req)
			checkRevisions(t, tw.collect(1, first), first, first)

			l := c.leader()
			snapshots := counterValue(t, l.metrics.SnapshotsSaved)
			isolated.Store(f.ID())
			last := putMany(t, kv, "k/", 320)
			// The leader snapshots once the state machine has made the
			// entries durable (a batched commit, up to 100 ms later), at
			// its next apply: write on until it has, so that the follower
			// must catch up by snapshot.
			for i := 0; counterValue(t, l.metrics.SnapshotsSaved) == snapshots; i++ {
				if i == 500 {
					t.Fatal("the leader took no snapshot after 320 writes and 500 more")
				}
				time.Sleep(10 * time.Millisecond)
				last = mustPut(t, kv, fmt.Sprintf("k/more%04d", i), "v")
			}
			isolated.Store(0)
			if history > last {
				resps := tw.collect(1, last)
				checkRevisions(t, resps, first+1, last)
			} else {
				r := tw.next(1)
				if !r.Canceled || r.Reason != catalogpb.ErrorReason_COMPACTED || r.CompactRevision < first+1 {
					t.Fatalf("got %v, want canceled with COMPACTED past revision %d", r, first)
				}
			}
			if f.watches.restores.Load() == 0 {
				t.Fatal("the follower caught up without a snapshot: the test no longer covers Restored")
			}
		})
	}
}

// TestSDKWatchResumesOnAnotherMember stops the member serving a watch while
// writes go on: the SDK resumes on another member, and every revision comes
// exactly once.
func TestSDKWatchResumesOnAnotherMember(t *testing.T) {
	c := newTestClusterWith(t, 3, func(*Config) {})
	var endpoints []string
	for _, s := range c.servers {
		endpoints = append(endpoints, s.ClientAddr())
	}
	cli, err := sdk.New(sdk.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	writer, err := sdk.New(sdk.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	first, err := writer.Put(t.Context(), "k/first", "v")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wch := cli.Watch(ctx, sdk.WatchPrefix(""), sdk.WithStartRevision(first.Header.Revision))

	var (
		mu      sync.Mutex
		lastRev int64
		stopW   = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopW:
				return
			default:
			}
			resp, err := writer.Put(t.Context(), fmt.Sprintf("k/%05d", i), "v")
			if err != nil {
				continue // a write cut by the stop; the next one goes elsewhere
			}
			mu.Lock()
			lastRev = max(lastRev, resp.Header.Revision)
			mu.Unlock()
		}
	}()
	written := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return lastRev
	}

	var resps []*catalogpb.WatchResponse
	members := map[uint64]bool{}
	read := func(until func() bool) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for !until() {
			select {
			case r, ok := <-wch:
				if !ok {
					t.Fatal("watch channel closed")
				}
				if r.Err != nil {
					t.Fatalf("watch ended: %v", r.Err)
				}
				members[r.Header.GetMemberId()] = true
				resps = append(resps, &catalogpb.WatchResponse{Header: r.Header, Events: r.Events})
			case <-timeout:
				t.Fatal("watch stalled")
			}
		}
	}
	lastSeen := func() int64 {
		if len(resps) == 0 {
			return 0
		}
		return resps[len(resps)-1].Header.Revision
	}
	read(func() bool { return lastSeen() >= first.Header.Revision+20 })
	var serving uint64
	for id := range members {
		serving = id
	}
	if len(members) != 1 {
		t.Fatalf("one stream served by %d members", len(members))
	}
	var name string
	for n, s := range c.servers {
		if s.ID() == serving {
			name = n
		}
	}
	c.stop(name)
	target := written() + 30
	read(func() bool { return lastSeen() >= target })
	close(stopW)
	wg.Wait()
	end := written()
	read(func() bool { return lastSeen() >= end })
	checkRevisions(t, resps, first.Header.Revision, lastSeen())
	if len(members) < 2 {
		t.Fatalf("the watch was served by %v only, want another member after %s stopped", members, name)
	}
}

// BenchmarkWatchPutToEvent measures, with 100 watchers each on its own
// stream, the time from a put's start until each watcher has its event
// (etcd's watch-latency); p50 and p99 of that over every watcher and put.
func BenchmarkWatchPutToEvent(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = "w", b.TempDir()
	var addrs []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	cfg.ClientAddr, cfg.PeerAddr, cfg.HTTPAddr = addrs[0], addrs[1], addrs[2]
	cfg.TickInterval = 20 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.node.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(s.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	kv := catalogpb.NewKVClient(conn)

	const watchers = 100
	type arrival struct {
		rev int64
		at  time.Time
	}
	arrivals := make(chan arrival, watchers*64)
	for range watchers {
		stream, err := catalogpb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: kvWatch(1, "bench/")}}); err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				r, err := stream.Recv()
				if err != nil {
					return
				}
				now := time.Now()
				for _, e := range r.Events {
					arrivals <- arrival{eventRev(e), now}
				}
			}
		}()
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		resp, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte(fmt.Sprintf("bench/%d", i%100)), Value: []byte("v")})
		if err != nil {
			b.Fatal(err)
		}
		for range watchers {
			a := <-arrivals
			if a.rev != resp.Header.Revision {
				b.Fatalf("event of revision %d, want %d", a.rev, resp.Header.Revision)
			}
			lat = append(lat, a.at.Sub(start))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
