package locks

import (
	"bytes"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
)

// A lock name's changes are computed on a copy of its state; commitLock
// then writes the copy, the token counter and the lease items, and builds
// the name's one event of the apply.

func getLock(tx *bbolt.Tx, name string) (*catalogpb.LockState, error) {
	st := &catalogpb.LockState{}
	found, err := getProto(tx.Bucket(LocksBucket), []byte(name), st)
	if err != nil || !found {
		return nil, err
	}
	return st, nil
}

// GetLock returns a lock name's state, or nil if it has neither holders nor
// waiters.
func GetLock(tx *bbolt.Tx, name string) (*catalogpb.LockState, error) {
	if err := ValidateName("lock", name); err != nil {
		return nil, err
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, err
	}
	return getLock(tx, name)
}

// ListLocks returns up to limit lock names (0: DefaultListLimit) that start
// with prefix and come after after, in name order, of kind (UNSPECIFIED:
// every kind), and whether more follow.
func ListLocks(tx *bbolt.Tx, prefix string, kind catalogpb.LockKind, after string, limit int) ([]*catalogpb.LockState, bool, error) {
	n, err := listLimit(limit)
	if err != nil {
		return nil, false, err
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, false, err
	}
	var out []*catalogpb.LockState
	more := false
	err = scanNames(tx.Bucket(LocksBucket), prefix, after, func(k, v []byte) (bool, error) {
		st := &catalogpb.LockState{}
		if err := proto.Unmarshal(v, st); err != nil {
			return false, fmt.Errorf("locks: stored lock %s is corrupt: %w", quoteBytes(k), err)
		}
		if kind != catalogpb.LockKind_LOCK_KIND_UNSPECIFIED && st.Kind != kind {
			return true, nil
		}
		if len(out) == n {
			more = true
			return false, nil
		}
		out = append(out, st)
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// Fence reports whether token holds name now, and the tokens that do.
// Tokens come from one counter, so a token names one grant: name may be a
// lock or an election (its holders' tokens), a barrier (a simple barrier's
// setting, a double barrier's participants) or a queue item's key
// "queue/id" (its delivery). A name that is none of these (a KV compare may
// name any key) has no holders: it is not an error.
func Fence(tx *bbolt.Tx, name string, token uint64) (valid bool, current []uint64, err error) {
	if ValidateName("lock", name) != nil {
		return false, nil, nil
	}
	if err := checkBuckets(tx, false); err != nil {
		return false, nil, err
	}
	st, err := getLock(tx, name)
	if err != nil {
		return false, nil, err
	}
	for _, h := range st.GetHolders() {
		current = append(current, h.Token)
	}
	b, err := getBarrier(tx, name)
	if err != nil {
		return false, nil, err
	}
	if b.GetToken() != 0 {
		current = append(current, b.GetToken())
	}
	for _, p := range b.GetParticipants() {
		if p.Token != 0 {
			current = append(current, p.Token)
		}
	}
	if queue, id, ok := SplitQueueItemKey(name); ok {
		it, err := getItem(tx, queue, id)
		if err != nil {
			return false, nil, err
		}
		if it.GetConsumer() != 0 && it.GetToken() != 0 {
			current = append(current, it.GetToken())
		}
	}
	return token != 0 && slices.Contains(current, token), current, nil
}

func holderTokens(st *catalogpb.LockState) []uint64 {
	out := []uint64{}
	for _, h := range st.GetHolders() {
		out = append(out, h.Token)
	}
	return out
}

func findOwner(owners []*catalogpb.LockOwner, leaseID int64) int {
	for i, o := range owners {
		if o.Lease == leaseID {
			return i
		}
	}
	return -1
}

func removeOwner(owners []*catalogpb.LockOwner, i int) []*catalogpb.LockOwner {
	return append(owners[:i:i], owners[i+1:]...)
}

// compatible reports whether owner could hold st alongside its holders.
func compatible(st *catalogpb.LockState, o *catalogpb.LockOwner) bool {
	if st.Kind == catalogpb.LockKind_LOCK_KIND_RWLOCK {
		if o.Mode == catalogpb.LockMode_LOCK_MODE_EXCLUSIVE {
			return len(st.Holders) == 0
		}
		for _, h := range st.Holders {
			if h.Mode == catalogpb.LockMode_LOCK_MODE_EXCLUSIVE {
				return false
			}
		}
		return true
	}
	var held int64
	for _, h := range st.Holders {
		held += h.Permits
	}
	return held+o.Permits <= st.Limit
}

// grantWaiters applies the grant rule: from the head of the waiters, grant
// each while it is compatible with the holders, and stop at the first that
// is not (strict FIFO: no barging). Each grant takes the next token.
func grantWaiters(st *catalogpb.LockState, counter *uint64, rev, now int64) {
	for len(st.Waiters) > 0 && compatible(st, st.Waiters[0]) {
		w := st.Waiters[0]
		st.Waiters = st.Waiters[1:]
		*counter++
		w.Token = *counter
		w.Revision = rev
		w.UnixNano = now
		st.Holders = append(st.Holders, w)
	}
}

func lockLeases(st *catalogpb.LockState) []int64 {
	var out []int64
	for _, o := range st.GetHolders() {
		out = append(out, o.Lease)
	}
	for _, o := range st.GetWaiters() {
		out = append(out, o.Lease)
	}
	return out
}

// moveItems attaches item (kind, key) to the leases in after but not
// before, and detaches it from those in before but not after. Every lease in
// after and not before must exist: the callers checked. It runs in every
// apply of a name, so it is linear in the owners, however many wait.
func moveItems(tx *bbolt.Tx, kind, key string, before, after []int64) error {
	had := make(map[int64]bool, len(before))
	for _, id := range before {
		had[id] = true
	}
	has := make(map[int64]bool, len(after))
	for _, id := range after {
		has[id] = true
		if !had[id] {
			if err := lease.Attach(tx, id, kind, key); err != nil {
				return err
			}
		}
	}
	for _, id := range before {
		if !has[id] {
			if err := lease.Detach(tx, id, kind, key); err != nil {
				return err
			}
		}
	}
	return nil
}

// commitLock stores st, the new state of a name whose state was prev (nil:
// absent), with the token counter, and returns the name's event; nothing
// when st equals prev. st with neither holders nor waiters deletes the
// name. It returns the state as stored (nil when deleted).
func commitLock(tx *bbolt.Tx, rev int64, prev, st *catalogpb.LockState, counterBefore, counter uint64) (*catalogpb.LockState, []*catalogpb.Event, error) {
	if prev != nil && proto.Equal(prev, st) {
		return prev, nil, nil
	}
	empty := len(st.Holders) == 0 && len(st.Waiters) == 0
	if prev == nil && empty {
		return nil, nil, nil
	}
	if err := moveItems(tx, LockKind, st.Name, lockLeases(prev), lockLeases(st)); err != nil {
		return nil, nil, err
	}
	if counter != counterBefore {
		if err := putLastToken(tx, counter); err != nil {
			return nil, nil, err
		}
	}
	b := tx.Bucket(LocksBucket)
	if empty {
		if err := b.Delete([]byte(st.Name)); err != nil {
			return nil, nil, fmt.Errorf("locks: delete lock %s: %w", quote(st.Name), err)
		}
		return nil, []*catalogpb.Event{{
			Type:     catalogpb.Event_DELETE,
			Kind:     LockKind,
			Kv:       kvOf(st.Name, 0, rev),
			PrevKv:   kvOf(prev.Name, prev.CreateRevision, prev.ModRevision),
			PrevLock: prev,
		}}, nil
	}
	st.ModRevision = rev
	if prev == nil {
		st.CreateRevision = rev
	}
	if err := putProto(b, []byte(st.Name), st); err != nil {
		return nil, nil, err
	}
	ev := &catalogpb.Event{
		Type: catalogpb.Event_PUT,
		Kind: LockKind,
		Kv:   kvOf(st.Name, st.CreateRevision, st.ModRevision),
		Lock: st,
	}
	if prev != nil {
		ev.PrevKv = kvOf(prev.Name, prev.CreateRevision, prev.ModRevision)
		ev.PrevLock = prev
	}
	return st, []*catalogpb.Event{ev}, nil
}

func applyAcquire(tx *bbolt.Tx, rev, now int64, req *catalogpb.LockRequest) (*catalogpb.LockResponse, []*catalogpb.Event, error) {
	if err := checkLeaseExists(tx, req.Lease); err != nil {
		return nil, nil, err
	}
	kind := normKind(req.Kind)
	permits := req.Permits
	if permits == 0 {
		permits = 1
	}
	prev, err := getLock(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	var st *catalogpb.LockState
	if prev == nil {
		limit := int64(1)
		switch kind {
		case catalogpb.LockKind_LOCK_KIND_SEMAPHORE:
			if req.Limit == 0 {
				return nil, nil, fmt.Errorf("%w: semaphore %s does not exist yet: give its limit (1..%d permits) to create it",
					ErrInvalidArgument, quote(req.Name), MaxPermits)
			}
			limit = req.Limit
		case catalogpb.LockKind_LOCK_KIND_RWLOCK:
			limit = 0
		}
		st = &catalogpb.LockState{Name: req.Name, Kind: kind, Limit: limit}
	} else {
		if prev.Kind != kind {
			return nil, nil, fmt.Errorf("%w: lock %s is a %s while it has holders or waiters; asked for a %s",
				ErrKindMismatch, quote(req.Name), kindName(prev.Kind), kindName(kind))
		}
		if kind == catalogpb.LockKind_LOCK_KIND_SEMAPHORE && req.Limit != 0 && req.Limit != prev.Limit {
			return nil, nil, fmt.Errorf("%w: semaphore %s has a limit of %d permits, fixed while it has holders or waiters; asked for limit %d",
				ErrPermitsExceeded, quote(req.Name), prev.Limit, req.Limit)
		}
		st = proto.CloneOf(prev)
	}
	if kind == catalogpb.LockKind_LOCK_KIND_SEMAPHORE && permits > st.Limit {
		return nil, nil, fmt.Errorf("%w: semaphore %s has %d permits; cannot take %d", ErrPermitsExceeded, quote(req.Name), st.Limit, permits)
	}
	counter := LastToken(tx)
	before := counter

	// A lease holds or waits for a name at most once: a call by a lease
	// already there continues that hold or wait.
	for _, owners := range [][]*catalogpb.LockOwner{st.Holders, st.Waiters} {
		i := findOwner(owners, req.Lease)
		if i < 0 {
			continue
		}
		o := owners[i]
		state := "holds"
		if o.Token == 0 {
			state = "waits for"
		}
		if req.WaiterId != o.WaiterId && containsID(o.RetiredWaiterIds, req.WaiterId) {
			// An earlier attempt of the call that took this place over,
			// applied after it: it must not take the place back (the
			// cancel its member may propose would then undo the newer
			// attempt's hold).
			return nil, nil, fmt.Errorf("%w: waiter id %d is an earlier attempt of the call that now %s lock %s as waiter id %d; that attempt changes nothing",
				ErrSuperseded, req.WaiterId, state, quote(req.Name), o.WaiterId)
		}
		if o.Mode != req.Mode || o.Permits != permits {
			return nil, nil, fmt.Errorf("%w: lease %d already %s lock %s with mode %s and %d permits; one lease holds or waits for a name once: release it first or use another lease",
				ErrInvalidArgument, req.Lease, state, quote(req.Name), modeName(o.Mode), o.Permits)
		}
		if o.Token == 0 && req.Try {
			return &catalogpb.LockResponse{State: prev}, nil, nil
		}
		if o.WaiterId != req.WaiterId {
			// Another call of the lease (or a later attempt of this one)
			// takes the place over; the attempts it names in retry_of are
			// retired with it.
			o.WaiterId = req.WaiterId
			o.RetiredWaiterIds = retiredIDs(req.RetryOf)
		}
		stored, evs, err := commitLock(tx, rev, prev, st, before, counter)
		if err != nil {
			return nil, nil, err
		}
		return &catalogpb.LockResponse{Acquired: o.Token != 0, Token: o.Token, State: stored}, evs, nil
	}

	owner := &catalogpb.LockOwner{
		Lease:    req.Lease,
		Mode:     req.Mode,
		Permits:  permits,
		Value:    req.Value,
		Revision: rev,
		UnixNano: now,
		WaiterId: req.WaiterId,
		// An earlier attempt of this call applied after this one finds
		// the place taken and changes nothing.
		RetiredWaiterIds: retiredIDs(req.RetryOf),
	}
	if req.Try && (len(st.Waiters) > 0 || !compatible(st, owner)) {
		return &catalogpb.LockResponse{State: prev}, nil, nil
	}
	st.Waiters = append(st.Waiters, owner)
	grantWaiters(st, &counter, rev, now)
	stored, evs, err := commitLock(tx, rev, prev, st, before, counter)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.LockResponse{Acquired: owner.Token != 0, Token: owner.Token, State: stored}, evs, nil
}

// retiredIDs returns the waiter ids of the earlier attempts a request names
// in retry_of, without duplicates and at most MaxRetryOf of them (the last
// ones), for LockOwner.retired_waiter_ids; nil for none.
func retiredIDs(retryOf []uint64) []uint64 {
	var out []uint64
	for _, id := range retryOf {
		if id != 0 && !containsID(out, id) {
			out = append(out, id)
		}
	}
	if len(out) > MaxRetryOf {
		out = out[len(out)-MaxRetryOf:]
	}
	return out
}

func applyRelease(tx *bbolt.Tx, rev, now int64, req *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, []*catalogpb.Event, error) {
	prev, err := getLock(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return nil, nil, fmt.Errorf("%w: token %d does not hold lock %s; it has no holders", ErrNotHeld, req.Token, quote(req.Name))
	}
	i := -1
	for j, h := range prev.Holders {
		if h.Token == req.Token {
			i = j
		}
	}
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: token %d does not hold lock %s; current holders: %v", ErrNotHeld, req.Token, quote(req.Name), holderTokens(prev))
	}
	if req.Lease != 0 && prev.Holders[i].Lease != req.Lease {
		return nil, nil, fmt.Errorf("%w: token %d of lock %s is held by lease %d, not lease %d", ErrNotHeld, req.Token, quote(req.Name), prev.Holders[i].Lease, req.Lease)
	}
	st := proto.CloneOf(prev)
	st.Holders = removeOwner(st.Holders, i)
	counter := LastToken(tx)
	before := counter
	grantWaiters(st, &counter, rev, now)
	stored, evs, err := commitLock(tx, rev, prev, st, before, counter)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.UnlockResponse{State: stored}, evs, nil
}

func applyCancel(tx *bbolt.Tx, rev, now int64, c *catalogpb.CancelWaitCommand) (*catalogpb.UnlockResponse, []*catalogpb.Event, error) {
	if c.Target == catalogpb.CancelWaitCommand_QUEUE {
		evs, err := cancelConsumer(tx, rev, now, c)
		if err != nil {
			return nil, nil, err
		}
		return &catalogpb.UnlockResponse{}, evs, nil
	}
	prev, err := getLock(tx, c.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return &catalogpb.UnlockResponse{}, nil, nil
	}
	st := proto.CloneOf(prev)
	if i := findOwner(st.Waiters, c.Lease); i >= 0 && st.Waiters[i].WaiterId == c.WaiterId {
		st.Waiters = removeOwner(st.Waiters, i)
	} else if i := findOwner(st.Holders, c.Lease); i >= 0 && st.Holders[i].WaiterId == c.WaiterId {
		st.Holders = removeOwner(st.Holders, i)
	} else {
		return &catalogpb.UnlockResponse{State: prev}, nil, nil
	}
	counter := LastToken(tx)
	before := counter
	grantWaiters(st, &counter, rev, now)
	stored, evs, err := commitLock(tx, rev, prev, st, before, counter)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.UnlockResponse{State: stored}, evs, nil
}

func applyProclaim(tx *bbolt.Tx, rev, now int64, req *catalogpb.ProclaimRequest) (*catalogpb.ProclaimResponse, []*catalogpb.Event, error) {
	k := req.Leader
	prev, err := getLock(tx, k.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return nil, nil, fmt.Errorf("%w: token %d does not lead election %s; it has no leader", ErrNotHeld, k.Token, quote(k.Name))
	}
	if prev.Kind != catalogpb.LockKind_LOCK_KIND_ELECTION {
		return nil, nil, fmt.Errorf("%w: %s is a %s, not an ELECTION; Proclaim is for elections", ErrKindMismatch, quote(k.Name), kindName(prev.Kind))
	}
	i := -1
	for j, h := range prev.Holders {
		if h.Token == k.Token && (k.Lease == 0 || h.Lease == k.Lease) {
			i = j
		}
	}
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: token %d of lease %d does not lead election %s; current leader tokens: %v",
			ErrNotHeld, k.Token, k.Lease, quote(k.Name), holderTokens(prev))
	}
	if bytes.Equal(prev.Holders[i].Value, req.Value) {
		return &catalogpb.ProclaimResponse{}, nil, nil
	}
	st := proto.CloneOf(prev)
	st.Holders[i].Value = req.Value
	counter := LastToken(tx)
	_, evs, err := commitLock(tx, rev, prev, st, counter, counter)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.ProclaimResponse{}, evs, nil
}

// deleteLeasedLock removes the hold or wait of lease leaseID on name and
// grants the next waiters.
func deleteLeasedLock(tx *bbolt.Tx, rev, now, leaseID int64, name string) ([]*catalogpb.Event, error) {
	prev, err := getLock(tx, name)
	if err != nil || prev == nil {
		return nil, err
	}
	st := proto.CloneOf(prev)
	removed := false
	if i := findOwner(st.Holders, leaseID); i >= 0 {
		st.Holders = removeOwner(st.Holders, i)
		removed = true
	}
	if i := findOwner(st.Waiters, leaseID); i >= 0 {
		st.Waiters = removeOwner(st.Waiters, i)
		removed = true
	}
	if !removed {
		return nil, nil
	}
	counter := LastToken(tx)
	before := counter
	grantWaiters(st, &counter, rev, now)
	_, evs, err := commitLock(tx, rev, prev, st, before, counter)
	return evs, err
}

// LeaderOf returns the leadership of an election state (nil: no leader).
func LeaderOf(st *catalogpb.LockState) *catalogpb.LeaderResponse {
	resp := &catalogpb.LeaderResponse{}
	if st == nil {
		return resp
	}
	resp.Candidates = int64(len(st.Waiters))
	if len(st.Holders) > 0 {
		h := st.Holders[0]
		resp.HasLeader = true
		resp.Leader = &catalogpb.LeaderKey{Name: st.Name, Lease: h.Lease, Token: h.Token, Revision: h.Revision}
		resp.Value = h.Value
	}
	return resp
}
