package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// waitFor bounds how long a test waits for something that takes
// milliseconds when it works.
const waitFor = 5 * time.Second

// A fakeSource is an instanceSource a test drives: list answers what the
// test scripted (or the current listing), and each watch is handed to the
// test on watches.
type fakeSource struct {
	mu        sync.Mutex
	listing   []*catalogpb.Instance
	listRev   int64
	listErrs  []error
	listCalls int
	isClosed  bool

	watches chan *fakeWatch
}

func newFakeSource(rev int64, insts ...*catalogpb.Instance) *fakeSource {
	return &fakeSource{listing: insts, listRev: rev, watches: make(chan *fakeWatch, 16)}
}

func (s *fakeSource) setListing(rev int64, insts ...*catalogpb.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listing, s.listRev = insts, rev
}

func (s *fakeSource) failLists(errs ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listErrs = append(s.listErrs, errs...)
}

func (s *fakeSource) lists() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listCalls
}

func (s *fakeSource) list(ctx context.Context, service string, _ catalogpb.Consistency) ([]*catalogpb.Instance, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listCalls++
	if len(s.listErrs) > 0 {
		err := s.listErrs[0]
		s.listErrs = s.listErrs[1:]
		return nil, 0, err
	}
	return append([]*catalogpb.Instance(nil), s.listing...), s.listRev, nil
}

func (s *fakeSource) watch(ctx context.Context, service string, startRev int64) WatchChan {
	w := &fakeWatch{service: service, start: startRev, c: make(chan WatchResponse, 64)}
	go func() {
		<-ctx.Done()
		w.close()
	}()
	s.watches <- w
	return w.c
}

func (s *fakeSource) closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isClosed
}

// nextWatch returns the next watch the resolver opened.
func (s *fakeSource) nextWatch(t *testing.T) *fakeWatch {
	t.Helper()
	select {
	case w := <-s.watches:
		return w
	case <-time.After(waitFor):
		t.Fatalf("no watch opened within %v", waitFor)
		return nil
	}
}

type fakeWatch struct {
	service string
	start   int64
	mu      sync.Mutex
	done    bool
	c       chan WatchResponse
}

func (w *fakeWatch) send(resp WatchResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.c <- resp
	}
}

// fail ends the watch with err, as Watch ends a watch it cannot resume.
func (w *fakeWatch) fail(err error) {
	w.send(WatchResponse{Err: err})
	w.close()
}

func (w *fakeWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.done = true
		close(w.c)
	}
}

func inst(id string, rev int64, h catalogpb.HealthStatus) *catalogpb.Instance {
	return &catalogpb.Instance{
		Service: "orders", Id: id, Address: "10.0.0." + id + ":80", Weight: 1,
		State: catalogpb.InstanceState_STATE_SERVING, Health: h, CreateRevision: rev, ModRevision: rev,
	}
}

func putEvent(in *catalogpb.Instance) *catalogpb.Event {
	return &catalogpb.Event{
		Type: catalogpb.Event_PUT, Kind: "instance", Instance: in,
		Kv: &catalogpb.KeyValue{Key: []byte(in.GetService() + "/" + in.GetId()), CreateRevision: in.GetCreateRevision(), ModRevision: in.GetModRevision()},
	}
}

func deleteEvent(service, id string, rev int64) *catalogpb.Event {
	return &catalogpb.Event{
		Type: catalogpb.Event_DELETE, Kind: "instance",
		Kv: &catalogpb.KeyValue{Key: []byte(service + "/" + id), ModRevision: rev},
	}
}

func ids(insts []*catalogpb.Instance) string {
	var out []string
	for _, in := range insts {
		out = append(out, in.GetId())
	}
	return strings.Join(out, ",")
}

// waitUpdate waits for a notification on r.Updates.
func waitUpdate(t *testing.T, r *Resolver) {
	t.Helper()
	select {
	case <-r.Updates():
	case <-time.After(waitFor):
		t.Fatalf("no update within %v", waitFor)
	}
}

// waitIDs waits until r's instances are want (ids joined by commas).
func waitIDs(t *testing.T, r *Resolver, want string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for ids(r.Instances()) != want {
		if time.Now().After(deadline) {
			t.Fatalf("instances = %q, want %q", ids(r.Instances()), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestResolver(t *testing.T, src *fakeSource, filters ...Filter) *Resolver {
	t.Helper()
	r, err := newResolver(t.Context(), src, "orders", filters)
	if err != nil {
		t.Fatalf("newResolver: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestResolverFollowsTheWatch(t *testing.T) {
	pass, crit := catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_CRITICAL
	src := newFakeSource(10, inst("b", 5, pass), inst("a", 4, pass), inst("c", 6, crit))
	r := newTestResolver(t, src, Healthy())

	if got := ids(r.Instances()); got != "a,b" {
		t.Errorf("after the listing Instances = %q, want a,b (ordered by id, c is critical)", got)
	}
	if r.Revision() != 10 {
		t.Errorf("Revision = %d, want the listing's 10", r.Revision())
	}
	w := src.nextWatch(t)
	if w.start != 11 || w.service != "orders" {
		t.Fatalf("watch of %q from %d, want orders from 11", w.service, w.start)
	}
	select {
	case <-r.Updates():
	default:
	}

	// One response, two revisions: c turns passing, a turns critical.
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("c", 11, pass)), putEvent(inst("a", 12, crit))}})
	waitUpdate(t, r)
	waitIDs(t, r, "b,c")
	if r.Revision() != 12 {
		t.Errorf("Revision = %d, want 12", r.Revision())
	}

	w.send(WatchResponse{Events: []*catalogpb.Event{deleteEvent("orders", "b", 13), putEvent(inst("d", 13, pass))}})
	waitUpdate(t, r)
	waitIDs(t, r, "c,d")

	// A bookmark moves the revision without a change.
	w.send(WatchResponse{Progress: true, Header: &catalogpb.ResponseHeader{Revision: 20}})
	deadline := time.Now().Add(waitFor)
	for r.Revision() != 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.Revision() != 20 {
		t.Errorf("Revision after a bookmark at 20 = %d", r.Revision())
	}
	select {
	case <-r.Updates():
		t.Errorf("a bookmark notified an update")
	default:
	}

	// Events of other services, other kinds, and the service's own record
	// (not deleted) change nothing.
	other := inst("x", 21, pass)
	other.Service = "payments"
	w.send(WatchResponse{Events: []*catalogpb.Event{
		putEvent(other),
		{Type: catalogpb.Event_PUT, Kind: "kv", Kv: &catalogpb.KeyValue{Key: []byte("orders/zz"), ModRevision: 22}},
		{Type: catalogpb.Event_PUT, Kind: "service", Service: &catalogpb.Service{Name: "orders"}, Kv: &catalogpb.KeyValue{Key: []byte("orders"), ModRevision: 23}},
	}})
	for r.Revision() != 23 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := ids(r.Instances()); got != "c,d" {
		t.Errorf("after unrelated events Instances = %q, want c,d", got)
	}

	// Deleting the service takes every instance.
	w.send(WatchResponse{Events: []*catalogpb.Event{
		{Type: catalogpb.Event_DELETE, Kind: "service", PrevService: &catalogpb.Service{Name: "orders"}, Kv: &catalogpb.KeyValue{Key: []byte("orders"), ModRevision: 24}},
	}})
	waitUpdate(t, r)
	waitIDs(t, r, "")
}

// TestResolverSkipsEventsOlderThanTheListing: a listing read in pages holds
// later pages at a newer revision than the watch starts from; the replayed
// older events of those instances must not roll them back.
func TestResolverSkipsEventsOlderThanTheListing(t *testing.T) {
	pass, crit := catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_CRITICAL
	// Listed at 10 (first page) but b was read at 15, already critical.
	src := newFakeSource(10, inst("a", 3, pass), inst("b", 15, crit))
	r := newTestResolver(t, src)
	w := src.nextWatch(t)
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("b", 12, pass))}})
	w.send(WatchResponse{Events: []*catalogpb.Event{deleteEvent("orders", "b", 13)}})
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("c", 14, pass))}})
	waitIDs(t, r, "a,b,c")
	for _, in := range r.Instances() {
		if in.GetId() == "b" && (in.GetHealth() != crit || in.GetModRevision() != 15) {
			t.Errorf("b = %v, want the listed critical version of revision 15", in)
		}
	}
}

func TestResolverListsAgainAfterCompaction(t *testing.T) {
	pass := catalogpb.HealthStatus_PASSING
	src := newFakeSource(10, inst("a", 3, pass))
	r := newTestResolver(t, src)
	w := src.nextWatch(t)

	src.setListing(50, inst("b", 40, pass))
	src.failLists(errors.New("connection refused"))
	w.fail(fmt.Errorf("%w: oldest revision held is 30", ErrCompacted))

	w2 := src.nextWatch(t)
	if w2.start != 51 {
		t.Errorf("after listing at 50 the watch starts at %d, want 51", w2.start)
	}
	waitIDs(t, r, "b")
	if r.Revision() != 50 {
		t.Errorf("Revision = %d, want 50", r.Revision())
	}
	if n := src.lists(); n != 3 {
		t.Errorf("listed %d times, want 3 (first, a failed one, the good one)", n)
	}
}

// TestResolverWatchesAgainAfterAnError: a watch that ends with an error
// other than compacted is opened again from the cache's revision, without
// listing.
func TestResolverWatchesAgainAfterAnError(t *testing.T) {
	src := newFakeSource(10, inst("a", 3, catalogpb.HealthStatus_PASSING))
	r := newTestResolver(t, src)
	w := src.nextWatch(t)
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("b", 12, catalogpb.HealthStatus_PASSING))}})
	waitIDs(t, r, "a,b")
	w.fail(ErrUnavailable)
	w2 := src.nextWatch(t)
	if w2.start != 13 {
		t.Errorf("watch reopened from %d, want 13", w2.start)
	}
	if n := src.lists(); n != 1 {
		t.Errorf("listed %d times, want 1", n)
	}
}

func TestResolverClose(t *testing.T) {
	src := newFakeSource(10, inst("a", 3, catalogpb.HealthStatus_PASSING))
	r, err := newResolver(t.Context(), src, "orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := src.nextWatch(t)
	r.Close()
	r.Close()
	for range r.Updates() {
	}
	w.mu.Lock()
	done := w.done
	w.mu.Unlock()
	if !done {
		t.Errorf("the watch is still open after Close")
	}
	if got := ids(r.Instances()); got != "a" {
		t.Errorf("after Close Instances = %q, want the last cached a", got)
	}
}

func TestNewResolverErrors(t *testing.T) {
	src := newFakeSource(1)
	if _, err := newResolver(t.Context(), src, "", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("resolver of an empty service name = %v, want ErrInvalidArgument", err)
	}
	src.failLists(ErrUnavailable)
	if _, err := newResolver(t.Context(), src, "orders", nil); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), `"orders"`) {
		t.Errorf("resolver whose listing failed = %v, want ErrUnavailable naming the service", err)
	}
}

func BenchmarkResolverInstances(b *testing.B) {
	var insts []*catalogpb.Instance
	for i := range 1000 {
		in := inst(fmt.Sprintf("i%04d", i), int64(i+1), catalogpb.HealthStatus_PASSING)
		if i%10 == 0 {
			in.Health = catalogpb.HealthStatus_CRITICAL
		}
		insts = append(insts, in)
	}
	src := newFakeSource(2000, insts...)
	r, err := newResolver(b.Context(), src, "orders", []Filter{Healthy()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	for b.Loop() {
		if n := len(r.Instances()); n != 900 {
			b.Fatalf("%d instances, want 900", n)
		}
	}
}
