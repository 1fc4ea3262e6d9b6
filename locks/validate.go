package locks

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// The Validate functions check a request without touching the store; the
// gRPC handlers call them before proposing and Apply calls them again.

// ValidateName checks a lock, barrier or queue name (what says which):
// 1..MaxNameBytes bytes of valid UTF-8 without control characters.
func ValidateName(what, name string) error {
	if len(name) == 0 || len(name) > MaxNameBytes {
		return fmt.Errorf("%w: %s name must be 1..%d bytes, got %d", ErrInvalidArgument, what, MaxNameBytes, len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: %s name %s is not valid UTF-8", ErrInvalidArgument, what, quote(name))
	}
	for i, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s name %s has the control character %U at byte %d; control characters are not allowed",
				ErrInvalidArgument, what, quote(name), r, i)
		}
	}
	return nil
}

// ValidatePrefix checks a listing's name prefix ("" lists every name).
func ValidatePrefix(what, prefix string) error {
	if len(prefix) > MaxNameBytes {
		return fmt.Errorf("%w: %s name prefix must be at most %d bytes, got %d", ErrInvalidArgument, what, MaxNameBytes, len(prefix))
	}
	return nil
}

// ValidateListLimit checks a listing's limit: 0 (the default) or positive.
func ValidateListLimit(limit int64) error {
	if limit < 0 {
		return fmt.Errorf("%w: limit must be 0 (server default %d) or positive, got %d", ErrInvalidArgument, DefaultListLimit, limit)
	}
	return nil
}

func validateLease(what string, id int64) error {
	if id <= 0 {
		return fmt.Errorf("%w: %s lease must be a positive lease id, got %d", ErrInvalidArgument, what, id)
	}
	return nil
}

func validateToken(what string, token uint64) error {
	if token == 0 {
		return fmt.Errorf("%w: %s token must be a fencing token returned by a grant (1 or more), got 0", ErrInvalidArgument, what)
	}
	return nil
}

func validateValue(value []byte) error {
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%w: election value must be at most %d bytes, got %d", ErrInvalidArgument, MaxValueBytes, len(value))
	}
	return nil
}

// ValidateLockRequest checks a Lock call. LOCK_KIND_ELECTION is refused:
// elections go through Campaign.
func ValidateLockRequest(r *catalogpb.LockRequest) error {
	if r != nil && r.Kind == catalogpb.LockKind_LOCK_KIND_ELECTION {
		return fmt.Errorf("%w: lock kind ELECTION is for Election.Campaign; Lock takes MUTEX, RWLOCK or SEMAPHORE", ErrInvalidArgument)
	}
	return validateAcquire(r)
}

// validateAcquire checks an acquire as the log carries it: a Lock call or a
// Campaign (kind ELECTION).
func validateAcquire(r *catalogpb.LockRequest) error {
	if r == nil {
		return fmt.Errorf("%w: lock request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("lock", r.Name); err != nil {
		return err
	}
	if err := validateLease("lock", r.Lease); err != nil {
		return err
	}
	kind := normKind(r.Kind)
	switch kind {
	case catalogpb.LockKind_LOCK_KIND_MUTEX, catalogpb.LockKind_LOCK_KIND_RWLOCK,
		catalogpb.LockKind_LOCK_KIND_SEMAPHORE, catalogpb.LockKind_LOCK_KIND_ELECTION:
	default:
		return fmt.Errorf("%w: lock kind must be MUTEX, RWLOCK, SEMAPHORE or ELECTION, got %d", ErrInvalidArgument, int32(r.Kind))
	}
	switch r.Mode {
	case catalogpb.LockMode_LOCK_MODE_EXCLUSIVE:
	case catalogpb.LockMode_LOCK_MODE_SHARED:
		if kind != catalogpb.LockKind_LOCK_KIND_RWLOCK {
			return fmt.Errorf("%w: mode SHARED is for RWLOCK only; a %s is always EXCLUSIVE", ErrInvalidArgument, kindName(kind))
		}
	default:
		return fmt.Errorf("%w: lock mode must be EXCLUSIVE or SHARED, got %d", ErrInvalidArgument, int32(r.Mode))
	}
	if kind == catalogpb.LockKind_LOCK_KIND_SEMAPHORE {
		if r.Limit < 0 || r.Limit > MaxPermits {
			return fmt.Errorf("%w: semaphore limit must be 1..%d permits (or 0 to take the existing semaphore's), got %d", ErrInvalidArgument, MaxPermits, r.Limit)
		}
		if r.Permits < 0 {
			return fmt.Errorf("%w: permits must be 1..limit (0 means 1), got %d", ErrInvalidArgument, r.Permits)
		}
		if r.Limit > 0 && r.Permits > r.Limit {
			return fmt.Errorf("%w: semaphore %s has %d permits; cannot take %d", ErrPermitsExceeded, quote(r.Name), r.Limit, r.Permits)
		}
	} else {
		if r.Limit != 0 && r.Limit != 1 {
			return fmt.Errorf("%w: limit is for semaphores; a %s has limit 1 (0 or 1 allowed), got %d", ErrInvalidArgument, kindName(kind), r.Limit)
		}
		if r.Permits != 0 && r.Permits != 1 {
			return fmt.Errorf("%w: permits are for semaphores; a %s takes 1 (0 or 1 allowed), got %d", ErrInvalidArgument, kindName(kind), r.Permits)
		}
	}
	if kind != catalogpb.LockKind_LOCK_KIND_ELECTION && len(r.Value) > 0 {
		return fmt.Errorf("%w: value is for election candidates; a %s takes none", ErrInvalidArgument, kindName(kind))
	}
	what := "lock"
	if kind == catalogpb.LockKind_LOCK_KIND_ELECTION {
		what = "campaign"
	}
	if err := validateRetryOf(what, r.WaiterId, r.RetryOf); err != nil {
		return err
	}
	return validateValue(r.Value)
}

// validateRetryOf checks the waiter ids of earlier attempts a Lock or
// Campaign names: at most MaxRetryOf, none 0, none the call's own waiterID.
func validateRetryOf(what string, waiterID uint64, retryOf []uint64) error {
	if len(retryOf) > MaxRetryOf {
		return fmt.Errorf("%w: %s retry_of must name at most %d waiter ids of earlier attempts, got %d",
			ErrInvalidArgument, what, MaxRetryOf, len(retryOf))
	}
	for i, id := range retryOf {
		if id == 0 {
			return fmt.Errorf("%w: %s retry_of[%d] is 0; it names the non-zero waiter ids of earlier attempts of the call",
				ErrInvalidArgument, what, i)
		}
		if id == waiterID {
			return fmt.Errorf("%w: %s retry_of[%d] is %d, this attempt's own waiter_id; it names only earlier attempts of the call",
				ErrInvalidArgument, what, i, id)
		}
	}
	return nil
}

// ValidateCampaignRequest checks a Campaign call.
func ValidateCampaignRequest(r *catalogpb.CampaignRequest) error {
	if r == nil {
		return fmt.Errorf("%w: campaign request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("election", r.Name); err != nil {
		return err
	}
	if err := validateLease("campaign", r.Lease); err != nil {
		return err
	}
	if err := validateRetryOf("campaign", r.WaiterId, r.RetryOf); err != nil {
		return err
	}
	return validateValue(r.Value)
}

// CampaignCommand returns the acquire a Campaign proposes, with the
// earlier attempts the Campaign names in retry_of.
func CampaignCommand(r *catalogpb.CampaignRequest, waiterID uint64) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Acquire{Acquire: &catalogpb.LockRequest{
		Name:     r.GetName(),
		Lease:    r.GetLease(),
		Kind:     catalogpb.LockKind_LOCK_KIND_ELECTION,
		Value:    r.GetValue(),
		WaiterId: waiterID,
		RetryOf:  append([]uint64(nil), r.GetRetryOf()...),
	}}}
}

// ValidateUnlockRequest checks an Unlock call (and a Resign as the log
// carries it). lease 0 releases the token whatever lease holds it.
func ValidateUnlockRequest(r *catalogpb.UnlockRequest) error {
	if r == nil {
		return fmt.Errorf("%w: unlock request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("lock", r.Name); err != nil {
		return err
	}
	if r.Lease < 0 {
		return fmt.Errorf("%w: unlock lease must be the holder's lease id (or 0 for any), got %d", ErrInvalidArgument, r.Lease)
	}
	return validateToken("unlock", r.Token)
}

// ValidateLeaderKey checks the leader key of a Proclaim or Resign.
func ValidateLeaderKey(k *catalogpb.LeaderKey) error {
	if k == nil {
		return fmt.Errorf("%w: leader key is missing; pass the key Campaign returned", ErrInvalidArgument)
	}
	if err := ValidateName("election", k.Name); err != nil {
		return err
	}
	if k.Lease < 0 {
		return fmt.Errorf("%w: leader lease must be the leader's lease id (or 0 for any), got %d", ErrInvalidArgument, k.Lease)
	}
	return validateToken("leader", k.Token)
}

// ValidateProclaimRequest checks a Proclaim call.
func ValidateProclaimRequest(r *catalogpb.ProclaimRequest) error {
	if r == nil {
		return fmt.Errorf("%w: proclaim request is missing", ErrInvalidArgument)
	}
	if err := ValidateLeaderKey(r.Leader); err != nil {
		return err
	}
	return validateValue(r.Value)
}

// ValidateResignRequest checks a Resign call.
func ValidateResignRequest(r *catalogpb.ResignRequest) error {
	if r == nil {
		return fmt.Errorf("%w: resign request is missing", ErrInvalidArgument)
	}
	return ValidateLeaderKey(r.Leader)
}

// ResignCommand returns the release a Resign proposes.
func ResignCommand(r *catalogpb.ResignRequest) *catalogpb.LocksCommand {
	k := r.GetLeader()
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{
		Name: k.GetName(), Lease: k.GetLease(), Token: k.GetToken(),
	}}}
}

// ValidateCancelWait checks a CancelWaitCommand.
func ValidateCancelWait(c *catalogpb.CancelWaitCommand) error {
	if c == nil {
		return fmt.Errorf("%w: cancel command is missing", ErrInvalidArgument)
	}
	what := "lock"
	switch c.Target {
	case catalogpb.CancelWaitCommand_LOCK:
	case catalogpb.CancelWaitCommand_QUEUE:
		what = "queue"
	default:
		return fmt.Errorf("%w: cancel target must be LOCK or QUEUE, got %d", ErrInvalidArgument, int32(c.Target))
	}
	if err := ValidateName(what, c.Name); err != nil {
		return err
	}
	return validateLease("cancel", c.Lease)
}

// ValidateBarrierSetRequest checks a Set call; lease 0 sets the barrier
// without a lease.
func ValidateBarrierSetRequest(r *catalogpb.BarrierSetRequest) error {
	if r == nil {
		return fmt.Errorf("%w: barrier set request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("barrier", r.Name); err != nil {
		return err
	}
	if r.Lease < 0 {
		return fmt.Errorf("%w: barrier lease must be a lease id, or 0 for none, got %d", ErrInvalidArgument, r.Lease)
	}
	return nil
}

// ValidateBarrierReleaseRequest checks a Release call.
func ValidateBarrierReleaseRequest(r *catalogpb.BarrierReleaseRequest) error {
	if r == nil {
		return fmt.Errorf("%w: barrier release request is missing", ErrInvalidArgument)
	}
	return ValidateName("barrier", r.Name)
}

// ValidateBarrierWaitRequest checks a Wait call.
func ValidateBarrierWaitRequest(r *catalogpb.BarrierWaitRequest) error {
	if r == nil {
		return fmt.Errorf("%w: barrier wait request is missing", ErrInvalidArgument)
	}
	return ValidateName("barrier", r.Name)
}

// ValidateBarrierEnterRequest checks an Enter call.
func ValidateBarrierEnterRequest(r *catalogpb.BarrierEnterRequest) error {
	if r == nil {
		return fmt.Errorf("%w: barrier enter request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("barrier", r.Name); err != nil {
		return err
	}
	if err := validateLease("barrier enter", r.Lease); err != nil {
		return err
	}
	if r.Count < 1 || r.Count > MaxPermits {
		return fmt.Errorf("%w: barrier count must be 1..%d participants, got %d", ErrInvalidArgument, MaxPermits, r.Count)
	}
	return nil
}

// ValidateBarrierLeaveRequest checks a Leave call.
func ValidateBarrierLeaveRequest(r *catalogpb.BarrierLeaveRequest) error {
	if r == nil {
		return fmt.Errorf("%w: barrier leave request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("barrier", r.Name); err != nil {
		return err
	}
	return validateLease("barrier leave", r.Lease)
}

// ValidateEnqueueRequest checks an Enqueue call.
func ValidateEnqueueRequest(r *catalogpb.EnqueueRequest) error {
	if r == nil {
		return fmt.Errorf("%w: enqueue request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("queue", r.Queue); err != nil {
		return err
	}
	if len(r.Payload) > MaxPayloadBytes {
		return fmt.Errorf("%w: queue payload must be at most %d bytes, got %d", ErrInvalidArgument, MaxPayloadBytes, len(r.Payload))
	}
	return nil
}

// ValidateDequeueRequest checks a Dequeue call.
func ValidateDequeueRequest(r *catalogpb.DequeueRequest) error {
	if r == nil {
		return fmt.Errorf("%w: dequeue request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("queue", r.Queue); err != nil {
		return err
	}
	if err := validateLease("dequeue", r.Lease); err != nil {
		return err
	}
	if len(r.RetryOf) > MaxRetryOf {
		return fmt.Errorf("%w: dequeue retry_of must name at most %d waiter ids of earlier attempts, got %d",
			ErrInvalidArgument, MaxRetryOf, len(r.RetryOf))
	}
	for i, id := range r.RetryOf {
		if id == 0 {
			return fmt.Errorf("%w: dequeue retry_of[%d] is 0; it names the non-zero waiter ids of earlier attempts of the call",
				ErrInvalidArgument, i)
		}
	}
	return nil
}

// ValidateAckRequest checks an Ack call.
func ValidateAckRequest(r *catalogpb.AckRequest) error {
	if r == nil {
		return fmt.Errorf("%w: ack request is missing", ErrInvalidArgument)
	}
	if err := ValidateName("queue", r.Queue); err != nil {
		return err
	}
	if r.Id == 0 {
		return fmt.Errorf("%w: ack id must be an item id returned by Dequeue (1 or more), got 0", ErrInvalidArgument)
	}
	return validateLease("ack", r.Lease)
}

// ValidateCommand checks a LocksCommand as Apply does before looking at
// the store.
func ValidateCommand(cmd *catalogpb.LocksCommand) error {
	if cmd == nil {
		return fmt.Errorf("%w: locks command is missing", ErrInvalidArgument)
	}
	switch op := cmd.Op.(type) {
	case *catalogpb.LocksCommand_Acquire:
		return validateAcquire(op.Acquire)
	case *catalogpb.LocksCommand_Release:
		return ValidateUnlockRequest(op.Release)
	case *catalogpb.LocksCommand_Cancel:
		return ValidateCancelWait(op.Cancel)
	case *catalogpb.LocksCommand_Proclaim:
		return ValidateProclaimRequest(op.Proclaim)
	case *catalogpb.LocksCommand_BarrierSet:
		return ValidateBarrierSetRequest(op.BarrierSet)
	case *catalogpb.LocksCommand_BarrierRelease:
		return ValidateBarrierReleaseRequest(op.BarrierRelease)
	case *catalogpb.LocksCommand_BarrierEnter:
		return ValidateBarrierEnterRequest(op.BarrierEnter)
	case *catalogpb.LocksCommand_BarrierLeave:
		return ValidateBarrierLeaveRequest(op.BarrierLeave)
	case *catalogpb.LocksCommand_Enqueue:
		return ValidateEnqueueRequest(op.Enqueue)
	case *catalogpb.LocksCommand_Dequeue:
		return ValidateDequeueRequest(op.Dequeue)
	case *catalogpb.LocksCommand_Ack:
		return ValidateAckRequest(op.Ack)
	}
	return fmt.Errorf("%w: locks command has no operation", ErrInvalidArgument)
}

func normKind(k catalogpb.LockKind) catalogpb.LockKind {
	if k == catalogpb.LockKind_LOCK_KIND_UNSPECIFIED {
		return catalogpb.LockKind_LOCK_KIND_MUTEX
	}
	return k
}
