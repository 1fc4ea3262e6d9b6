package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/registry"
)

// --- apply: grantLease and revoke in the state machine ---

func leaseCmdEntry(t *testing.T, index uint64, cmd *catalogpb.Command) raftpb.Entry {
	t.Helper()
	cmd.RequestId = index
	data, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return raftpb.Entry{Index: index, Term: 1, Type: raftpb.EntryNormal, Data: data}
}

func leaseGrantCmd(id, ttl int64) *catalogpb.Command {
	return &catalogpb.Command{NowUnixNano: 1, Op: &catalogpb.Command_LeaseGrant{LeaseGrant: &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: ttl}}}
}

func leaseRevokeCmd(id int64) *catalogpb.Command {
	return &catalogpb.Command{Op: &catalogpb.Command_LeaseRevoke{LeaseRevoke: &catalogpb.LeaseRevokeCommand{Id: id, Expired: true}}}
}

func leasedPutCmd(key string, leaseID int64) *catalogpb.Command {
	return &catalogpb.Command{Op: &catalogpb.Command_Put{Put: &catalogpb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: leaseID}}}
}

// eventBatchAt reads the events stored at rev.
func eventBatchAt(t *testing.T, sm *stateMachine, rev int64) *catalogpb.EventBatch {
	t.Helper()
	b := &catalogpb.EventBatch{}
	err := sm.view(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(eventsBucket).Get(revKey(rev))
		if raw == nil {
			return fmt.Errorf("no events at revision %d", rev)
		}
		return proto.Unmarshal(raw, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// describeEvents renders events as "TYPE kind key" for comparisons.
func describeEvents(evs []*catalogpb.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%s %s %s", ev.Type, ev.Kind, ev.Kv.GetKey()))
	}
	return out
}

func TestApplyRevokeDeletesItemsInOneRevision(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	res := sm.Apply([]raftpb.Entry{
		leaseCmdEntry(t, 1, leaseGrantCmd(7, 10)),
		leaseCmdEntry(t, 2, leasedPutCmd("a", 7)),
		leaseCmdEntry(t, 3, leasedPutCmd("b", 7)),
		leaseCmdEntry(t, 4, leasedPutCmd("c", 0)),
		leaseCmdEntry(t, 5, leasedPutCmd("d", 8)), // unknown lease: refused
		leaseCmdEntry(t, 6, leaseRevokeCmd(7)),
		leaseCmdEntry(t, 7, leaseRevokeCmd(7)), // gone: refused
		leaseCmdEntry(t, 8, leaseGrantCmd(7, 10)),
		leaseCmdEntry(t, 9, leaseGrantCmd(7, 10)), // exists: refused
	})
	for i, r := range res {
		switch i {
		case 4:
			if !errors.Is(r.Err, registry.ErrLeaseNotFound) {
				t.Errorf("put with unknown lease: %v", r.Err)
			}
		case 6:
			if !errors.Is(r.Err, lease.ErrNotFound) {
				t.Errorf("second revoke: %v", r.Err)
			}
		case 8:
			if !errors.Is(r.Err, lease.ErrExists) {
				t.Errorf("second grant: %v", r.Err)
			}
		default:
			if r.Err != nil {
				t.Fatalf("entry %d: %v", i+1, r.Err)
			}
		}
	}
	resp := res[5].Value.(*catalogpb.LeaseRevokeResponse)
	if resp.Header.Revision != 5 {
		t.Errorf("revoke at revision %d, want 5", resp.Header.Revision)
	}
	var items []string
	for _, it := range resp.Items {
		items = append(items, it.Kind+":"+it.Key)
	}
	if !slices.Equal(items, []string{"kv:a", "kv:b"}) {
		t.Errorf("revoke response items %v", items)
	}
	b := eventBatchAt(t, sm, 5)
	if got, want := describeEvents(b.Events), []string{"DELETE kv a", "DELETE kv b", "DELETE lease 7"}; !slices.Equal(got, want) {
		t.Errorf("revoke events %v, want %v", got, want)
	}
	for _, ev := range b.Events {
		if ev.Kv.ModRevision != 5 {
			t.Errorf("event %v has mod revision %d", ev.Kv.Key, ev.Kv.ModRevision)
		}
	}
	if sm.Revision() != 6 {
		t.Errorf("revision %d, want 6 (grantLease, 3 puts, revoke, grantLease)", sm.Revision())
	}
	err := sm.view(func(tx *bbolt.Tx) error {
		if n := registry.Count(tx); n != 1 {
			return fmt.Errorf("%d keys left, want 1 (c)", n)
		}
		if n := lease.CountItems(tx, 7); n != 0 {
			return fmt.Errorf("the new lease 7 has %d items", n)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestApplyRevokeOfUnknownItemKindChangesNothing(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	sm.Apply([]raftpb.Entry{leaseCmdEntry(t, 1, leaseGrantCmd(3, 10)), leaseCmdEntry(t, 2, leasedPutCmd("a", 3))})
	err := sm.db.Update(func(tx *bbolt.Tx) error { return lease.Attach(tx, 3, "future-kind", "x") })
	if err != nil {
		t.Fatal(err)
	}
	res := sm.Apply([]raftpb.Entry{leaseCmdEntry(t, 3, leaseRevokeCmd(3))})
	if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), `"future-kind"`) {
		t.Fatalf("revoke: %v, want an error naming the kind", res[0].Err)
	}
	if sm.Revision() != 2 {
		t.Errorf("revision moved to %d", sm.Revision())
	}
	err = sm.view(func(tx *bbolt.Tx) error {
		if !lease.Exists(tx, 3) || registry.Count(tx) != 1 {
			return errors.New("a refused revoke deleted something")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// --- a cluster ---

func leaseClient(t *testing.T, addr string) catalogpb.LeaseClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogpb.NewLeaseClient(conn)
}

func grant(t *testing.T, lc catalogpb.LeaseClient, ttl int64) int64 {
	t.Helper()
	resp, err := lc.Grant(t.Context(), &catalogpb.LeaseGrantRequest{TtlSeconds: ttl})
	if err != nil {
		t.Fatalf("grantLease ttl %d: %v", ttl, err)
	}
	if resp.Id <= 0 || resp.TtlSeconds != ttl {
		t.Fatalf("grantLease answered %v", resp)
	}
	return resp.Id
}

func leaseTTL(t *testing.T, lc catalogpb.LeaseClient, id int64) *catalogpb.LeaseTimeToLiveResponse {
	t.Helper()
	var resp *catalogpb.LeaseTimeToLiveResponse
	var err error
	for range 50 { // an election may be under way
		resp, err = lc.TimeToLive(t.Context(), &catalogpb.LeaseTimeToLiveRequest{Id: id, Items: true})
		if status.Code(err) != codes.Unavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("time to live of %d: %v", id, err)
	}
	return resp
}

func wantLeaseErr(t *testing.T, err error, code codes.Code, reason string, msg ...string) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason {
		t.Fatalf("error %v: want %v %s", err, code, reason)
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
}

// revokeBatch finds the events of lease id's revoke on s.
func revokeBatch(t *testing.T, s *Server, id int64) *catalogpb.EventBatch {
	t.Helper()
	var found *catalogpb.EventBatch
	err := s.sm.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(eventsBucket).ForEach(func(_, v []byte) error {
			b := &catalogpb.EventBatch{}
			if err := proto.Unmarshal(v, b); err != nil {
				return err
			}
			for _, ev := range b.Events {
				if ev.Kind == lease.EventKind && ev.Type == catalogpb.Event_DELETE && ev.Lease.GetId() == id {
					found = b
				}
			}
			return nil
		})
	})
	if err != nil || found == nil {
		t.Fatalf("no revoke of lease %d in the events (%v)", id, err)
	}
	return found
}

func TestLeaseLifecycleOnACluster(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	f := c.follower()
	lc := leaseClient(t, f.ClientAddr())
	kv := kvClient(t, f.ClientAddr())

	start := time.Now()
	id := grant(t, lc, 1)
	for _, k := range []string{"svc/a", "svc/b"} {
		if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte(k), Value: []byte("x"), Lease: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("svc/keep"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("svc/c"), Value: []byte("x"), Lease: id + 1})
	wantLeaseErr(t, err, codes.NotFound, "LEASE_NOT_FOUND", fmt.Sprint(id+1))

	ttl := leaseTTL(t, lc, id)
	var items []string
	for _, it := range ttl.Items {
		items = append(items, it.Kind+":"+it.Key)
	}
	if !slices.Equal(items, []string{"kv:svc/a", "kv:svc/b"}) || ttl.GrantedTtlSeconds != 1 || ttl.TtlSeconds != 1 || ttl.RemainingMs <= 0 || ttl.RemainingMs > 1000 {
		t.Errorf("time to live %v (items %v)", ttl, items)
	}
	list, err := lc.List(ctx, &catalogpb.LeaseListRequest{})
	if err != nil || len(list.Leases) != 1 || list.Leases[0].Id != id || list.Leases[0].Items != 2 || list.Count != 1 || list.Leases[0].RemainingMs <= 0 {
		t.Errorf("list %v %v", list, err)
	}

	// Nobody keeps it alive: it expires, never before its TTL.
	waitFor(t, 5*time.Second, "lease expired", func() error {
		if r := leaseTTL(t, lc, id); r.TtlSeconds != -1 {
			return fmt.Errorf("ttl %d", r.TtlSeconds)
		}
		return nil
	})
	if d := time.Since(start); d < time.Second {
		t.Errorf("lease of 1s gone after %v", d)
	}
	resp, err := kv.Get(ctx, &catalogpb.GetRequest{Key: []byte("svc/"), Prefix: true})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "svc/keep" {
		t.Errorf("keys after expiry: %v %v", resp, err)
	}
	// Every member holds the same revoke: keys and lease in one revision.
	for _, s := range c.servers {
		waitFor(t, 5*time.Second, "member applied the revoke", func() error {
			return s.sm.view(func(tx *bbolt.Tx) error {
				if lease.Exists(tx, id) {
					return errors.New("lease still stored")
				}
				return nil
			})
		})
		b := revokeBatch(t, s, id)
		want := []string{"DELETE kv svc/a", "DELETE kv svc/b", fmt.Sprintf("DELETE lease %d", id)}
		if got := describeEvents(b.Events); !slices.Equal(got, want) {
			t.Errorf("%s: revoke events %v, want %v", s.cfg.Name, got, want)
		}
	}

	// Errors name what is wrong.
	_, err = lc.Revoke(ctx, &catalogpb.LeaseRevokeRequest{Id: id})
	wantLeaseErr(t, err, codes.NotFound, "LEASE_NOT_FOUND", fmt.Sprint(id))
	_, err = lc.Revoke(ctx, &catalogpb.LeaseRevokeRequest{Id: 0})
	wantLeaseErr(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "lease id must be a positive integer, got 0")
	for _, bad := range []int64{0, -5, lease.MaxTTLSeconds + 1} {
		_, err = lc.Grant(ctx, &catalogpb.LeaseGrantRequest{TtlSeconds: bad})
		wantLeaseErr(t, err, codes.InvalidArgument, "LEASE_TTL_OUT_OF_RANGE", fmt.Sprintf("ttl_seconds must be 1..%d, got %d", lease.MaxTTLSeconds, bad))
	}
	_, err = lc.Grant(ctx, &catalogpb.LeaseGrantRequest{TtlSeconds: 5, Id: -1})
	wantLeaseErr(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "got -1")
	if _, err := lc.Grant(ctx, &catalogpb.LeaseGrantRequest{TtlSeconds: 5, Id: 42}); err != nil {
		t.Fatal(err)
	}
	_, err = lc.Grant(ctx, &catalogpb.LeaseGrantRequest{TtlSeconds: 5, Id: 42})
	wantLeaseErr(t, err, codes.AlreadyExists, "LEASE_EXISTS", "42")
	if r := leaseTTL(t, lc, 999); r.TtlSeconds != -1 {
		t.Errorf("time to live of an unknown lease: %v", r)
	}
	_, err = lc.List(ctx, &catalogpb.LeaseListRequest{Limit: maxLeaseListLimit + 1})
	wantLeaseErr(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "limit must be 0..10000")

	// A client revoke returns what it deleted.
	if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("x"), Value: []byte("x"), Lease: 42}); err != nil {
		t.Fatal(err)
	}
	rv, err := lc.Revoke(ctx, &catalogpb.LeaseRevokeRequest{Id: 42})
	if err != nil || len(rv.Items) != 1 || rv.Items[0].Key != "x" {
		t.Errorf("revoke: %v %v", rv, err)
	}
}

func TestMinLeaseTTLFollowsTheElectionTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TickInterval = 200 * time.Millisecond // election timeout 2s: minimum TTL 3s
	s := &Server{cfg: cfg}
	err := s.checkLeaseTTL(2)
	if !errors.Is(err, lease.ErrTTLOutOfRange) {
		t.Fatalf("ttl 2: %v", err)
	}
	for _, m := range []string{"ttl_seconds must be 3..31536000, got 2", "election timeout of 2s"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
	if err := s.checkLeaseTTL(3); err != nil {
		t.Errorf("ttl at the minimum: %v", err)
	}
}

// leaseKeeper keeps a lease alive over a KeepAlive stream to one member,
// reconnecting whenever the stream ends, until stop.
type leaseKeeper struct {
	renewed atomic.Int64 // successful renewals
	lost    atomic.Bool  // a response said ttl 0
	stopc   chan struct{}
	wg      sync.WaitGroup
}

func keepLeaseAlive(t *testing.T, lc catalogpb.LeaseClient, id int64, every time.Duration) *leaseKeeper {
	k := &leaseKeeper{stopc: make(chan struct{})}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			ctx, cancel := context.WithCancel(context.Background())
			stream, err := lc.KeepAlive(ctx)
			for err == nil {
				if err = stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
					break
				}
				var resp *catalogpb.LeaseKeepAliveResponse
				if resp, err = stream.Recv(); err != nil {
					break
				}
				if resp.TtlSeconds == 0 {
					k.lost.Store(true)
				} else {
					k.renewed.Add(1)
				}
				select {
				case <-k.stopc:
					cancel()
					return
				case <-time.After(every):
				}
			}
			cancel()
			select {
			case <-k.stopc:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(k.stop)
	return k
}

func (k *leaseKeeper) stop() {
	select {
	case <-k.stopc:
	default:
		close(k.stopc)
	}
	k.wg.Wait()
}

func TestKeepAliveThroughAFollower(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	lc := leaseClient(t, f.ClientAddr())
	id := grant(t, lc, 1)

	stream, err := lc.KeepAlive(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Id != id || resp.TtlSeconds != 1 {
			t.Fatalf("keep-alive answered %v", resp)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// 2.5s on a 1s lease: alive because of the keep-alives.
	if r := leaseTTL(t, lc, id); r.TtlSeconds != 1 {
		t.Fatalf("after keep-alives: %v", r)
	}
	// An unknown lease gets ttl 0 on the same stream, which stays usable.
	for _, unknown := range []int64{id + 1, 0, -3} {
		if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: unknown}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.TtlSeconds != 0 || resp.Id != unknown {
			t.Fatalf("keep-alive of unknown lease %d: %v %v", unknown, resp, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
	// Keep-alives are never proposals: no revision was spent on them.
	rev := f.sm.Revision()
	k := keepLeaseAlive(t, lc, id, 50*time.Millisecond)
	waitFor(t, 5*time.Second, "renewals", func() error {
		if n := k.renewed.Load(); n < 10 {
			return fmt.Errorf("%d renewals", n)
		}
		return nil
	})
	k.stop()
	if got := f.sm.Revision(); got != rev {
		t.Errorf("keep-alives moved the revision from %d to %d", rev, got)
	}
	waitFor(t, 5*time.Second, "lease expired after the keep-alives stopped", func() error {
		if r := leaseTTL(t, lc, id); r.TtlSeconds != -1 {
			return fmt.Errorf("ttl %d", r.TtlSeconds)
		}
		return nil
	})
}

// TestLeasesSurviveLeaderFailover: a lease kept alive through a failover
// lives on; a lease nobody keeps alive still expires after it, and not
// before its TTL.
func TestLeasesSurviveLeaderFailover(t *testing.T) {
	for _, how := range []string{"stopped", "isolated"} {
		t.Run(how, func(t *testing.T) {
			var isolated atomic.Uint64
			c := newTestClusterWith(t, 3, func(cfg *Config) {
				cfg.Drop = func(from, to uint64) bool {
					iso := isolated.Load()
					return iso != 0 && (from == iso || to == iso)
				}
			})
			t.Cleanup(func() { isolated.Store(0) })
			old := c.leader()
			var via *Server
			for _, s := range c.servers {
				if s != old {
					via = s
					break
				}
			}
			lc := leaseClient(t, via.ClientAddr())
			kv := kvClient(t, via.ClientAddr())
			const ttl = 2
			live := grant(t, lc, ttl)
			start := time.Now()
			dead := grant(t, lc, ttl)
			for key, id := range map[string]int64{"live": live, "dead": dead} {
				if _, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte(key), Value: []byte("x"), Lease: id}); err != nil {
					t.Fatal(err)
				}
			}
			k := keepLeaseAlive(t, lc, live, 300*time.Millisecond)
			// A client's stream on a follower, open across the failover,
			// goes on working: its next keep-alive reaches the new leader.
			raw, err := lc.KeepAlive(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.Send(&catalogpb.LeaseKeepAliveRequest{Id: live}); err != nil {
				t.Fatal(err)
			}
			if r, err := raw.Recv(); err != nil || r.TtlSeconds != ttl {
				t.Fatalf("keep-alive before the failover: %v %v", r, err)
			}

			switch how {
			case "stopped":
				c.stop(old.cfg.Name)
			case "isolated":
				isolated.Store(old.ID())
			}
			waitFor(t, 10*time.Second, "a new leader", func() error {
				if l := via.Leader(); l == 0 || l == old.ID() {
					return fmt.Errorf("leader %x", l)
				}
				return nil
			})
			waitFor(t, 10*time.Second, "a keep-alive on the old stream answered by the new leader", func() error {
				if err := raw.Send(&catalogpb.LeaseKeepAliveRequest{Id: live}); err != nil {
					return err
				}
				r, err := raw.Recv()
				if err != nil {
					// A keep-alive in flight to the old leader fails the
					// stream; the client opens a new one, as the SDK does.
					if raw, err = lc.KeepAlive(t.Context()); err != nil {
						t.Fatal(err)
					}
					return fmt.Errorf("stream failed, reopened: %v", err)
				}
				if r.TtlSeconds != ttl {
					return fmt.Errorf("ttl %d", r.TtlSeconds)
				}
				return nil
			})
			waitFor(t, 10*time.Second, "the unrenewed lease expired", func() error {
				if r := leaseTTL(t, lc, dead); r.TtlSeconds != -1 {
					return fmt.Errorf("ttl %d", r.TtlSeconds)
				}
				return nil
			})
			if d := time.Since(start); d < ttl*time.Second {
				t.Errorf("lease of %ds revoked after %v", ttl, d)
			}
			// Two more TTLs: the kept lease is still there, with its key.
			time.Sleep(2 * ttl * time.Second)
			if r := leaseTTL(t, lc, live); r.TtlSeconds <= 0 || len(r.Items) != 1 {
				t.Fatalf("kept lease after the failover: %v", r)
			}
			if k.lost.Load() {
				t.Error("a keep-alive of the kept lease answered ttl 0")
			}
			resp, err := kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("live")})
			if err != nil || len(resp.Kvs) != 1 {
				t.Errorf("key of the kept lease: %v %v", resp, err)
			}
			resp, err = kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("dead")})
			if err != nil || len(resp.Kvs) != 0 {
				t.Errorf("key of the expired lease: %v %v", resp, err)
			}
		})
	}
}

func TestExpiredLeasesAreRevokedPaced(t *testing.T) {
	cfg := singleNodeConfig(t, "solo", t.TempDir())
	cfg.LeaseRevokeRate = 20 // burst 2
	s := startSingleNode(t, cfg)
	lc := catalogpb.NewLeaseClient(dialServer(t, s))
	const n = 30
	for range n {
		grant(t, lc, 1)
	}
	var first, last time.Time
	waitFor(t, 10*time.Second, "every lease revoked", func() error {
		left := s.leases.lessor.Len()
		if left < n && first.IsZero() {
			first = time.Now()
		}
		if left > 0 {
			return fmt.Errorf("%d leases left", left)
		}
		last = time.Now()
		return nil
	})
	// 30 revokes at 20 per second with a burst of 2 take at least 1.4s.
	if d := last.Sub(first); d < time.Second {
		t.Errorf("%d expired leases revoked within %v: not paced", n, d)
	}
}

// BenchmarkKeepAlive measures keep-alive round trips to the leader of a
// single-node cluster over many concurrent streams (50 per CPU), each
// waiting for its answer before it sends again.
func BenchmarkKeepAlive(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Name = "bench"
	cfg.DataDir = b.TempDir()
	cfg.ClientAddr, cfg.PeerAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TickInterval = 20 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Stop(context.Background())
	if err := s.node.WaitLeader(b.Context()); err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+s.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	lc := catalogpb.NewLeaseClient(conn)
	resp, err := lc.Grant(b.Context(), &catalogpb.LeaseGrantRequest{TtlSeconds: 60})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(50)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		stream, err := lc.KeepAlive(b.Context())
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: resp.Id}); err != nil {
				b.Error(err)
				return
			}
			r, err := stream.Recv()
			if err != nil || r.TtlSeconds != 60 {
				b.Errorf("keep-alive: %v %v", r, err)
				return
			}
		}
	})
}

// TestKeepAliveRelayKeepsOrder: many client streams on a follower, each
// with many keep-alives in flight, share the follower's one stream to the
// leader; every stream gets one answer per request, in its own order, each
// for the lease it asked about.
func TestKeepAliveRelayKeepsOrder(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	lc := leaseClient(t, f.ClientAddr())
	ids := []int64{grant(t, lc, 5), grant(t, lc, 7), 0, 12345} // 0 and 12345: no such lease
	want := map[int64]int64{ids[0]: 5, ids[1]: 7, 0: 0, 12345: 0}
	const streams, perStream = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for n := range streams {
		wg.Go(func() {
			stream, err := lc.KeepAlive(t.Context())
			if err != nil {
				errs <- err
				return
			}
			sent := make([]int64, perStream)
			for i := range sent {
				sent[i] = ids[(i+n)%len(ids)]
				if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: sent[i]}); err != nil {
					errs <- err
					return
				}
			}
			for i, id := range sent {
				resp, err := stream.Recv()
				if err != nil {
					errs <- fmt.Errorf("stream %d, answer %d: %v", n, i, err)
					return
				}
				if resp.Id != id || resp.TtlSeconds != want[id] {
					errs <- fmt.Errorf("stream %d, answer %d: lease %d ttl %d, want lease %d ttl %d", n, i, resp.Id, resp.TtlSeconds, id, want[id])
					return
				}
			}
			if err := stream.CloseSend(); err != nil {
				errs <- err
				return
			}
			if _, err := stream.Recv(); err != io.EOF {
				errs <- fmt.Errorf("stream %d after CloseSend: %v, want EOF", n, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
