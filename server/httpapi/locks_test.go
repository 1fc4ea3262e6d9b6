package httpapi

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// The fake's coordination state: lock names sorted by name (two mutexes, an
// election with a leader and a candidate, a semaphore), a double barrier
// and a queue.
var (
	fakeLocks = []*catalogpb.LockState{
		{Name: "jobs/a", Kind: catalogpb.LockKind_LOCK_KIND_MUTEX, Limit: 1, CreateRevision: 40, ModRevision: 44,
			Holders: []*catalogpb.LockOwner{{Lease: 7, Token: 12, Permits: 1, Revision: 41, UnixNano: healthChangedAt.UnixNano(), WaiterId: 99}},
			Waiters: []*catalogpb.LockOwner{{Lease: 8, Permits: 1, Revision: 44, WaiterId: 1 << 60}}},
		{Name: "jobs/b", Kind: catalogpb.LockKind_LOCK_KIND_MUTEX, Limit: 1, CreateRevision: 45, ModRevision: 45,
			Waiters: []*catalogpb.LockOwner{{Lease: 9, Permits: 1, Revision: 45}}},
		{Name: "leader", Kind: catalogpb.LockKind_LOCK_KIND_ELECTION, Limit: 1, CreateRevision: 46, ModRevision: 47,
			Holders: []*catalogpb.LockOwner{{Lease: 7, Token: 13, Permits: 1, Value: []byte("host-1:80"), Revision: 46}},
			Waiters: []*catalogpb.LockOwner{{Lease: 8, Permits: 1, Value: []byte("host-2:80"), Revision: 47}}},
		{Name: "slots", Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 5, CreateRevision: 48, ModRevision: 48,
			Holders: []*catalogpb.LockOwner{{Lease: 7, Token: 14, Permits: 2, Revision: 48}, {Lease: 8, Token: 15, Permits: 3, Revision: 48}}},
	}
	fakeBarriers = []*catalogpb.BarrierState{
		{Name: "phase", Kind: catalogpb.BarrierKind_BARRIER_KIND_DOUBLE, Count: 2, Open: true, OpenRevision: 51, CreateRevision: 50, ModRevision: 51,
			Participants: []*catalogpb.BarrierParticipant{{Lease: 7, Revision: 50, Token: 20}, {Lease: 8, Revision: 51, Token: 21}}},
	}
	fakeQueues = []*catalogpb.QueueStatus{
		{Queue: "work", Depth: 3, NextId: 6, InFlight: []*catalogpb.QueueItem{
			{Queue: "work", Id: 2, Payload: []byte("job 2"), EnqueueRevision: 52, Consumer: 7, WaiterId: 5, Deliveries: 2, DeliveredUnixNano: healthChangedAt.UnixNano(), Token: 30},
		}},
	}
)

func (f *fakeBackend) ListLocks(ctx context.Context, req *catalogpb.ListLocksRequest) (*catalogpb.ListLocksResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	resp := &catalogpb.ListLocksResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}}
	for _, l := range fakeLocks {
		if !strings.HasPrefix(l.Name, req.Prefix) || l.Name <= req.ContinueAfter ||
			req.Kind != catalogpb.LockKind_LOCK_KIND_UNSPECIFIED && l.Kind != req.Kind {
			continue
		}
		if req.Limit > 0 && int64(len(resp.Locks)) == req.Limit {
			resp.More = true
			break
		}
		resp.Locks = append(resp.Locks, l)
	}
	return resp, nil
}

func (f *fakeBackend) GetLock(ctx context.Context, req *catalogpb.GetLockRequest) (*catalogpb.GetLockResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "lock name must be 1..512 bytes, got 0")
	}
	resp := &catalogpb.GetLockResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}}
	for _, l := range fakeLocks {
		if l.Name == req.Name {
			resp.State = l
		}
	}
	return resp, nil
}

func (f *fakeBackend) ListBarriers(ctx context.Context, req *catalogpb.ListBarriersRequest) (*catalogpb.ListBarriersResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	return &catalogpb.ListBarriersResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Barriers: fakeBarriers}, nil
}

func (f *fakeBackend) ListQueues(ctx context.Context, req *catalogpb.ListQueuesRequest) (*catalogpb.ListQueuesResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	return &catalogpb.ListQueuesResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Queues: fakeQueues}, nil
}

func (f *fakeBackend) QueueStatus(ctx context.Context, req *catalogpb.QueueStatusRequest) (*catalogpb.QueueStatusResponse, error) {
	if err := f.record(req); err != nil {
		return nil, err
	}
	resp := &catalogpb.QueueStatusResponse{Header: &catalogpb.ResponseHeader{Revision: fakeRevision}, Status: &catalogpb.QueueStatus{Queue: req.Queue, NextId: 1}}
	for _, q := range fakeQueues {
		if q.Queue == req.Queue {
			resp.Status = q
		}
	}
	return resp, nil
}

func TestGraphQLCoordination(t *testing.T) {
	f := newFakeBackend()
	h, _ := newTestHandler(t, f)
	var data struct {
		Locks []struct {
			Name    string
			Kind    string
			Limit   int
			Token   *string
			Holder  *struct{ Lease, Token, Since, WaiterId string }
			Holders []struct {
				Lease, Token string
				Permits      int
			}
			Waiters []struct{ Lease, Token, Revision, WaiterId string }
		}
		Lock      struct{ Name, ModRevision string }
		Missing   *struct{ Name string }
		Elections []struct {
			Name, Value string
			Leader      *string
			Token       *string
			Candidates  int
		}
		NotElection *struct{ Name string }
		Barriers    []struct {
			Name, Kind   string
			Count        int
			Open         bool
			Participants []struct{ Lease, Token string }
		}
		Queues []struct {
			Name          string
			Depth         int
			InFlightCount int
			InFlight      []struct {
				Id, Payload, Consumer, DeliveredAt, Token string
				Deliveries                                int
			}
			NextId string
		}
		Queue struct {
			Name  string
			Depth int
		}
	}
	requireNoErrors(t, postGraphQL(t, h, `{
		locks(prefix: "jobs/") { name kind limit token holder { lease token since waiterId } holders { lease token permits } waiters { lease token revision waiterId } }
		lock(name: "jobs/a", consistency: SERIALIZABLE) { name modRevision }
		missing: lock(name: "nope") { name }
		elections { name leader value token candidates }
		notElection: election(name: "jobs/a") { name }
		barriers { name kind count open participants { lease token } }
		queues { name depth inFlightCount inFlight { id payload consumer deliveries deliveredAt token } nextId }
		queue(name: "empty") { name depth }
	}`, nil, &data))

	if len(data.Locks) != 2 || data.Locks[0].Name != "jobs/a" || data.Locks[1].Name != "jobs/b" {
		t.Fatalf("locks under jobs/: %+v", data.Locks)
	}
	a, b := data.Locks[0], data.Locks[1]
	if a.Kind != "LOCK_KIND_MUTEX" || a.Limit != 1 || a.Token == nil || *a.Token != "12" ||
		a.Holder == nil || a.Holder.Lease != "7" || a.Holder.Since != "2026-03-04T05:06:07.89Z" || a.Holder.WaiterId != "99" {
		t.Errorf("jobs/a: %+v holder %+v", a, a.Holder)
	}
	if len(a.Waiters) != 1 || a.Waiters[0].Lease != "8" || a.Waiters[0].Token != "0" || a.Waiters[0].WaiterId != "1152921504606846976" {
		t.Errorf("jobs/a waiters: %+v", a.Waiters)
	}
	if b.Token != nil || b.Holder != nil || len(b.Holders) != 0 || len(b.Waiters) != 1 {
		t.Errorf("jobs/b (waiters only): %+v", b)
	}
	if data.Lock.Name != "jobs/a" || data.Lock.ModRevision != "44" || data.Missing != nil {
		t.Errorf("lock = %+v, missing = %+v", data.Lock, data.Missing)
	}
	if len(data.Elections) != 1 {
		t.Fatalf("elections: %+v", data.Elections)
	}
	e := data.Elections[0]
	if e.Name != "leader" || e.Leader == nil || *e.Leader != "7" || e.Value != "host-1:80" || e.Token == nil || *e.Token != "13" || e.Candidates != 1 {
		t.Errorf("election: %+v", e)
	}
	if data.NotElection != nil {
		t.Errorf("election(name: a mutex) = %+v, want null", data.NotElection)
	}
	if len(data.Barriers) != 1 || data.Barriers[0].Kind != "BARRIER_KIND_DOUBLE" || !data.Barriers[0].Open ||
		data.Barriers[0].Count != 2 || len(data.Barriers[0].Participants) != 2 || data.Barriers[0].Participants[1].Token != "21" {
		t.Errorf("barriers: %+v", data.Barriers)
	}
	if len(data.Queues) != 1 {
		t.Fatalf("queues: %+v", data.Queues)
	}
	q := data.Queues[0]
	if q.Name != "work" || q.Depth != 3 || q.InFlightCount != 1 || q.NextId != "6" ||
		q.InFlight[0].Id != "2" || q.InFlight[0].Payload != "job 2" || q.InFlight[0].Consumer != "7" || q.InFlight[0].Deliveries != 2 || q.InFlight[0].Token != "30" {
		t.Errorf("queue: %+v", q)
	}
	if data.Queue.Name != "empty" || data.Queue.Depth != 0 {
		t.Errorf("empty queue: %+v", data.Queue)
	}

	// The requests carry the arguments.
	var sawKind, sawSerializable bool
	for _, c := range f.recordedCalls() {
		switch r := c.(type) {
		case *catalogpb.ListLocksRequest:
			if r.Kind == catalogpb.LockKind_LOCK_KIND_ELECTION && r.Limit == defaultCoordLimit {
				sawKind = true
			}
		case *catalogpb.GetLockRequest:
			if r.Name == "jobs/a" && r.Serializable {
				sawSerializable = true
			}
		}
	}
	if !sawKind || !sawSerializable {
		t.Errorf("elections asked for kind ELECTION: %v; lock asked serializable: %v; calls %v", sawKind, sawSerializable, f.recordedCalls())
	}
}

func TestGraphQLCoordinationErrors(t *testing.T) {
	f := newFakeBackend()
	h, _ := newTestHandler(t, f)
	errs := postGraphQL(t, h, `{ locks(limit: 0) { name } }`, nil, nil)
	if len(errs) != 1 || errs[0].Extensions["reason"] != "INVALID_LIMIT" {
		t.Errorf("limit 0: %+v", errs)
	}
	errs = postGraphQL(t, h, `{ lock(name: "") { name } }`, nil, nil)
	if len(errs) != 1 || errs[0].Extensions["code"] != "InvalidArgument" {
		t.Errorf("empty name: %+v", errs)
	}
	f.registryErr = status.Error(codes.Unavailable, "no leader")
	errs = postGraphQL(t, h, `{ queues { name } }`, nil, nil)
	if len(errs) != 1 || errs[0].Extensions["code"] != "Unavailable" {
		t.Errorf("backend down: %+v", errs)
	}
}
