package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

const (
	// leaseCheckInterval is how often the leader looks for expired leases:
	// a lease is revoked at most this long after its deadline (plus pacing).
	leaseCheckInterval = 25 * time.Millisecond
	// leaseRetryDelay is how long an expired lease whose revoke failed waits
	// before the leader proposes its revoke again.
	leaseRetryDelay = time.Second
)

// A leaseManager keeps the Lessor in step with the store on every member
// (it follows the "lease" events) and, on the leader, holds the leases'
// deadlines: it promotes the Lessor when this member becomes leader,
// answers keep-alives from memory, and proposes revokes for expired leases,
// paced by Config.LeaseRevokeRate.
//
// The set of leases is known on every member, not loaded when a member
// becomes leader: a load would race with the apply of grants and revokes
// committed meanwhile, while the events arrive in order. Promotion waits for
// a linearizable read first, so the Lessor then holds every lease granted
// under earlier leaders.
type leaseManager struct {
	s      *Server
	lessor *lease.Lessor

	mu sync.Mutex
	// term is the raft term in which this member promoted the Lessor; 0
	// while it is not primary.
	term uint64
	// primaryc is closed once the Lessor is promoted; a new one replaces it
	// on demotion.
	primaryc chan struct{}

	// renewals counts keep-alives this member renewed as leader; expired
	// counts the revokes of expired leases it committed (metrics).
	renewals atomic.Int64
	expired  atomic.Int64
}

func newLeaseManager(s *Server) *leaseManager {
	l := &leaseManager{s: s, lessor: lease.NewLessor(), primaryc: make(chan struct{})}
	if err := l.reload(); err != nil {
		s.lg.Error("load leases", "err", err)
	}
	return l
}

// reload replaces the Lessor's leases with the store's.
func (l *leaseManager) reload() error {
	var leases []lease.Lease
	err := l.s.sm.view(func(tx *bbolt.Tx) error {
		return lease.ForEach(tx, func(li *catalogpb.LeaseInfo) error {
			leases = append(leases, lease.Lease{ID: li.Id, TTLSeconds: li.TtlSeconds})
			return nil
		})
	})
	if err != nil {
		return err
	}
	l.lessor.Reset(time.Now(), leases)
	return nil
}

// Applied implements applyObserver: grants and revokes reach the Lessor.
func (l *leaseManager) Applied(rev int64, batches []*catalogpb.EventBatch) {
	var now time.Time
	for _, b := range batches {
		for _, ev := range b.Events {
			if ev.Kind != lease.EventKind || ev.Lease == nil {
				continue
			}
			switch ev.Type {
			case catalogpb.Event_PUT:
				if now.IsZero() {
					now = time.Now()
				}
				l.lessor.Grant(ev.Lease.Id, ev.Lease.TtlSeconds, now)
			case catalogpb.Event_DELETE:
				l.lessor.Revoke(ev.Lease.Id)
			}
		}
	}
}

// Restored implements applyObserver.
func (l *leaseManager) Restored(rev int64) {
	if err := l.reload(); err != nil {
		l.s.lg.Error("reload leases after snapshot restore", "err", err)
	}
}

// run follows leadership and, while this member leads, revokes expired
// leases, paced.
func (l *leaseManager) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	var revokes sync.WaitGroup
	defer revokes.Wait()
	defer cancel()
	go func() {
		// A takeover waiting for its read, and revokes in flight, end on stop.
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	rate := l.s.cfg.LeaseRevokeRate
	pacer := lease.NewPacer(rate, max(rate/10, 1))
	inflight := make(chan struct{}, min(max(rate/10, 8), 256))
	ticker := time.NewTicker(leaseCheckInterval)
	defer ticker.Stop()
	for {
		changed := l.s.node.LeaderChanged()
		if l.s.isLeader() {
			if !l.primaryFor(l.s.node.Term()) {
				l.promote(ctx)
			}
			if l.lessor.Primary() {
				l.revokeExpired(ctx, pacer, inflight, &revokes)
			}
		} else if l.lessor.Primary() {
			l.demote()
		}
		select {
		case <-stop:
			l.demote()
			return
		case <-changed:
		case <-ticker.C:
		}
	}
}

func (l *leaseManager) primaryFor(term uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term != 0 && l.term == term
}

// promote makes the Lessor primary once this member has applied everything
// earlier leaders committed: every lease then gets a full TTL from now.
func (l *leaseManager) promote(ctx context.Context) {
	term := l.s.node.Term()
	rctx, cancel := context.WithTimeout(ctx, l.s.cfg.RequestTimeout)
	err := l.s.node.LinearizableRead(rctx)
	cancel()
	if err != nil {
		l.s.lg.Debug("lease takeover waits for a linearizable read", "err", err)
		return
	}
	if !l.s.isLeader() || l.s.node.Term() != term {
		return
	}
	l.lessor.Promote(time.Now())
	l.mu.Lock()
	l.term = term
	select {
	case <-l.primaryc:
	default:
		close(l.primaryc)
	}
	l.mu.Unlock()
	l.s.lg.Info("leader took over the leases, each extended by its TTL", "leases", l.lessor.Len(), "term", term)
}

func (l *leaseManager) demote() {
	l.lessor.Demote()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != 0 {
		l.term = 0
		l.primaryc = make(chan struct{})
	}
}

// revokeExpired proposes revokes for as many expired leases as the pacer
// and the bound on revokes in flight allow.
func (l *leaseManager) revokeExpired(ctx context.Context, pacer *lease.Pacer, inflight chan struct{}, wg *sync.WaitGroup) {
	now := time.Now()
	n := min(pacer.Available(now), cap(inflight)-len(inflight))
	if n <= 0 {
		return
	}
	ids := l.lessor.Expired(now, n)
	pacer.Spend(len(ids))
	for _, id := range ids {
		inflight <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			l.revokeOne(ctx, id)
		}()
	}
}

func (l *leaseManager) revokeOne(ctx context.Context, id int64) {
	if !l.s.isLeader() {
		// Deposed since Expired: the new leader decides.
		l.lessor.RetryLater(id, time.Now().Add(leaseRetryDelay))
		return
	}
	_, err := l.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_LeaseRevoke{
		LeaseRevoke: &catalogpb.LeaseRevokeCommand{Id: id, Expired: true},
	}})
	switch {
	case err == nil:
		// Applying it removed the lease from the Lessor.
		l.expired.Add(1)
	case errors.Is(err, lease.ErrNotFound):
		l.lessor.Revoke(id)
	default:
		if ctx.Err() == nil {
			l.s.lg.Warn("revoke of an expired lease failed; retrying", "lease", id, "err", err, "retry_in", leaseRetryDelay)
		}
		l.lessor.RetryLater(id, time.Now().Add(leaseRetryDelay))
	}
}

// waitPrimary returns once the Lessor holds deadlines, or errNotLeader when
// this member does not lead (or has not taken over the leases within two
// election timeouts).
func (l *leaseManager) waitPrimary(ctx context.Context) error {
	timer := time.NewTimer(2 * l.s.cfg.ElectionTimeout())
	defer timer.Stop()
	for {
		changed := l.s.node.LeaderChanged()
		l.mu.Lock()
		promoted := l.primaryc
		l.mu.Unlock()
		if l.lessor.Primary() {
			return nil
		}
		if lead := l.s.node.Leader(); lead != l.s.id {
			return fmt.Errorf("%w: member %x is not the leader (the leader is %x, 0 if none); reconnect", errNotLeader, l.s.id, lead)
		}
		select {
		case <-promoted:
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("%w: member %x leads but has not taken over the leases yet; retry", errNotLeader, l.s.id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// renew renews lease id on the leader and returns its TTL, or 0 when the
// lease does not exist.
func (l *leaseManager) renew(ctx context.Context, id int64) (int64, error) {
	if id <= 0 {
		return 0, nil
	}
	linearized := false
	for {
		ttl, err := l.lessor.Renew(id, time.Now())
		switch {
		case err == nil:
			l.renewals.Add(1)
			return ttl, nil
		case errors.Is(err, lease.ErrNotFound):
			if _, known := l.lessor.TTL(id); known || linearized {
				return 0, nil // expired, its revoke is coming
			}
			// Granted through another member and not applied here yet?
			if err := l.s.linearize(ctx); err != nil {
				return 0, err
			}
			linearized = true
		default:
			if err := l.waitPrimary(ctx); err != nil {
				return 0, err
			}
		}
	}
}

// checkLeaseTTL checks a requested TTL against the server's bounds.
func (s *Server) checkLeaseTTL(ttl int64) error {
	lo := s.cfg.MinLeaseTTL()
	if ttl < lo || ttl > lease.MaxTTLSeconds {
		return fmt.Errorf("%w: ttl_seconds must be %d..%d, got %d (the minimum is 1.5 times the election timeout of %v, rounded up to whole seconds, so that a leader failover alone never expires a lease)",
			lease.ErrTTLOutOfRange, lo, lease.MaxTTLSeconds, ttl, s.cfg.ElectionTimeout())
	}
	return nil
}

// registryLeaseKinds are the kinds of lease items registry.DeleteLeased
// deletes; locksLeaseKinds those locks.DeleteLeased deletes.
var (
	registryLeaseKinds = map[string]bool{registry.EventKind: true, registry.InstanceKind: true}
	locksLeaseKinds    = func() map[string]bool {
		m := make(map[string]bool, len(locks.LeaseKinds))
		for _, k := range locks.LeaseKinds {
			m[k] = true
		}
		return m
	}()
)

// applyLeaseCommand applies a grant or a revoke at revision rev.
func applyLeaseCommand(tx *bbolt.Tx, rev int64, cmd *catalogpb.Command) (proto.Message, []*catalogpb.Event, error) {
	switch op := cmd.Op.(type) {
	case *catalogpb.Command_LeaseGrant:
		resp, evs, err := lease.ApplyGrant(tx, rev, cmd.NowUnixNano, op.LeaseGrant)
		if err != nil {
			return nil, nil, err
		}
		resp.Header = header(rev, evs)
		return resp, evs, nil
	case *catalogpb.Command_LeaseRevoke:
		return applyLeaseRevoke(tx, rev, cmd.NowUnixNano, op.LeaseRevoke)
	}
	return nil, nil, fmt.Errorf("%w: %T is not a lease command", lease.ErrInvalidArgument, cmd.Op)
}

// applyLeaseRevoke deletes lease c.Id and everything attached to it, all at
// revision rev: the items' events, then the lease's. Locks, barriers and
// queue items it held pass to their next waiters in the same revision.
func applyLeaseRevoke(tx *bbolt.Tx, rev, nowUnixNano int64, c *catalogpb.LeaseRevokeCommand) (proto.Message, []*catalogpb.Event, error) {
	if err := lease.ValidateID(c.GetId()); err != nil {
		return nil, nil, err
	}
	if _, err := lease.Get(tx, c.Id); err != nil {
		return nil, nil, err
	}
	items, err := lease.Items(tx, c.Id)
	if err != nil {
		return nil, nil, err
	}
	// Every kind is checked before anything is deleted: a refused revoke
	// changes nothing.
	for _, it := range items {
		if !registryLeaseKinds[it.Kind] && !locksLeaseKinds[it.Kind] {
			return nil, nil, fmt.Errorf("server: lease %d holds a %q item (key %q), a kind this server cannot delete; the lease was not revoked", c.Id, it.Kind, it.Key)
		}
	}
	var evs []*catalogpb.Event
	for _, it := range items {
		var itemEvs []*catalogpb.Event
		var err error
		if registryLeaseKinds[it.Kind] {
			itemEvs, _, err = registry.DeleteLeased(tx, rev, c.Id, it)
		} else {
			itemEvs, _, err = locks.DeleteLeased(tx, rev, nowUnixNano, c.Id, it)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("server: revoke lease %d: delete %s %q: %w", c.Id, it.Kind, it.Key, err)
		}
		evs = append(evs, itemEvs...)
	}
	ev, err := lease.ApplyRevoke(tx, rev, c.Id)
	if err != nil {
		return nil, nil, err
	}
	evs = append(evs, ev)
	return &catalogpb.LeaseRevokeResponse{Header: header(rev, evs), Items: items}, evs, nil
}
