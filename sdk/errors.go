package sdk

import (
	"context"
	"errors"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors returned by the client. Match them with errors.Is; the error
// itself carries the server's message, which says what was wrong.
var (
	ErrKeyEmpty             = errors.New("sdk: key is empty")
	ErrKeyTooLarge          = errors.New("sdk: key too large")
	ErrValueTooLarge        = errors.New("sdk: value too large")
	ErrRequestTooLarge      = errors.New("sdk: request too large")
	ErrTooManyOps           = errors.New("sdk: too many operations in transaction")
	ErrDuplicateKey         = errors.New("sdk: key written twice in one transaction")
	ErrLeaseNotFound        = errors.New("sdk: lease not found")
	ErrInvalidContinueToken = errors.New("sdk: invalid continue token")
	ErrInvalidLimit         = errors.New("sdk: invalid limit")
	ErrInvalidArgument      = errors.New("sdk: invalid argument")
	ErrCompacted            = errors.New("sdk: revision compacted")
	// ErrNoLeader means the cluster had no leader; the request was not applied.
	ErrNoLeader = errors.New("sdk: no leader")
	// ErrTimeout means the server gave up waiting for the request to commit:
	// a write may or may not have been applied.
	ErrTimeout = errors.New("sdk: request timed out on the server")
	ErrStopped = errors.New("sdk: server stopped")
	// ErrWrongCluster means a server answered for another cluster than
	// Config.ClusterID (see there); the call's effect, for a write, is
	// unknown to this cluster's members: it went to the other one.
	ErrWrongCluster = errors.New("sdk: answer from another cluster")
	// ErrUnavailable means no server could be reached (gRPC code Unavailable
	// without a catalogd reason).
	ErrUnavailable = errors.New("sdk: server unavailable")

	// Membership changes.
	ErrMemberNotFound   = errors.New("sdk: member not found")
	ErrMemberExists     = errors.New("sdk: member already exists")
	ErrMemberNotLearner = errors.New("sdk: member is not a learner")
	// ErrLearnerNotReady means the learner has not caught up with the leader
	// yet; promote it later.
	ErrLearnerNotReady = errors.New("sdk: learner not ready")
	// ErrUnhealthyCluster means the change would leave the cluster without a
	// healthy quorum; it was refused.
	ErrUnhealthyCluster = errors.New("sdk: cluster unhealthy")
	// ErrMembershipChangeInProgress means another membership change is still
	// being applied; nothing was changed, try again.
	ErrMembershipChangeInProgress = errors.New("sdk: membership change in progress")
	ErrTooManyLearners            = errors.New("sdk: too many learners")

	// Leases, registry, watch.
	ErrLeaseExists      = errors.New("sdk: lease already exists")
	ErrTTLOutOfRange    = errors.New("sdk: lease TTL out of range")
	ErrServiceNotFound  = errors.New("sdk: service not found")
	ErrInstanceNotFound = errors.New("sdk: instance not found")
	ErrServiceNotEmpty  = errors.New("sdk: service still has instances")
	// ErrEpochMismatch means a shard map changed since it was read: read it
	// again and retry with its epoch.
	ErrEpochMismatch = errors.New("sdk: shard map epoch mismatch")
	// ErrWatchTooSlow means the server cancelled a watch whose events were
	// not read fast enough; resume it from the last revision seen.
	ErrWatchTooSlow  = errors.New("sdk: watch cancelled: too slow")
	ErrWatchIDExists = errors.New("sdk: watch id already in use")
	ErrWatchNotFound = errors.New("sdk: no such watch")
	ErrNotLeader     = errors.New("sdk: member is not the leader")

	// Coordination (locks, elections, barriers, queues).

	// ErrNotHeld means the token (or lease) is not a current holder's: a
	// stale Unlock, Resign or Proclaim, or a lock that moved on.
	ErrNotHeld = errors.New("sdk: lock not held")
	// ErrKindMismatch means the name is in use as another kind (mutex, RW
	// lock, semaphore, election, or another barrier kind).
	ErrKindMismatch = errors.New("sdk: name in use as another kind")
	// ErrPermitsExceeded means more permits were asked than the semaphore
	// has, or another limit while the semaphore exists.
	ErrPermitsExceeded = errors.New("sdk: permits exceeded")
	// ErrNotEntered means Leave by a lease that did not Enter the barrier.
	ErrNotEntered = errors.New("sdk: barrier not entered")
	// ErrBarrierMismatch means a count that disagrees with the barrier's,
	// or Enter into a barrier already open.
	ErrBarrierMismatch = errors.New("sdk: barrier mismatch")
	// ErrItemNotFound means Ack of a queue item that does not exist or is
	// not handed to the caller's lease.
	ErrItemNotFound = errors.New("sdk: queue item not found")
	// ErrWaitSuperseded means another call with the same lease took over
	// the wait (a second Lock, Campaign or Dequeue of the same session on
	// the same name).
	ErrWaitSuperseded = errors.New("sdk: wait superseded")
	// ErrLocked is returned by TryLock, TryRLock and TryAcquire when the
	// lock cannot be granted now; nothing was changed. The SDK sets it, not
	// a server.
	ErrLocked = errors.New("sdk: locked by another session")
)

// errorDomain is the ErrorInfo domain of reasons set by catalogd servers.
const errorDomain = "catalogd"

// errorTable maps a gRPC failure to its sentinel. Rows with a reason match an
// ErrorInfo detail of domain "catalogd" carrying that reason, whatever the code
// (the code column records what the server sends). Rows without a reason match
// by code, and only when no reason row matched. Context errors map to the
// context sentinels so errors.Is(err, context.DeadlineExceeded) holds.
var errorTable = []struct {
	reason catalogpb.ErrorReason
	code   codes.Code
	err    error
}{
	{catalogpb.ErrorReason_KEY_EMPTY, codes.InvalidArgument, ErrKeyEmpty},
	{catalogpb.ErrorReason_KEY_TOO_LARGE, codes.InvalidArgument, ErrKeyTooLarge},
	{catalogpb.ErrorReason_VALUE_TOO_LARGE, codes.InvalidArgument, ErrValueTooLarge},
	{catalogpb.ErrorReason_REQUEST_TOO_LARGE, codes.InvalidArgument, ErrRequestTooLarge},
	{catalogpb.ErrorReason_TOO_MANY_OPS, codes.InvalidArgument, ErrTooManyOps},
	{catalogpb.ErrorReason_DUPLICATE_KEY, codes.InvalidArgument, ErrDuplicateKey},
	{catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN, codes.InvalidArgument, ErrInvalidContinueToken},
	{catalogpb.ErrorReason_INVALID_LIMIT, codes.InvalidArgument, ErrInvalidLimit},
	{catalogpb.ErrorReason_INVALID_ARGUMENT, codes.InvalidArgument, ErrInvalidArgument},
	{catalogpb.ErrorReason_LEASE_NOT_FOUND, codes.NotFound, ErrLeaseNotFound},
	{catalogpb.ErrorReason_COMPACTED, codes.OutOfRange, ErrCompacted},
	{catalogpb.ErrorReason_NO_LEADER, codes.Unavailable, ErrNoLeader},
	{catalogpb.ErrorReason_STOPPED, codes.Unavailable, ErrStopped},
	{catalogpb.ErrorReason_TIMEOUT, codes.DeadlineExceeded, ErrTimeout},
	{catalogpb.ErrorReason_MEMBER_NOT_FOUND, codes.NotFound, ErrMemberNotFound},
	{catalogpb.ErrorReason_MEMBER_EXISTS, codes.AlreadyExists, ErrMemberExists},
	{catalogpb.ErrorReason_MEMBER_NOT_LEARNER, codes.FailedPrecondition, ErrMemberNotLearner},
	{catalogpb.ErrorReason_LEARNER_NOT_READY, codes.FailedPrecondition, ErrLearnerNotReady},
	{catalogpb.ErrorReason_UNHEALTHY_CLUSTER, codes.FailedPrecondition, ErrUnhealthyCluster},
	{catalogpb.ErrorReason_MEMBERSHIP_CHANGE_IN_PROGRESS, codes.Aborted, ErrMembershipChangeInProgress},
	{catalogpb.ErrorReason_TOO_MANY_LEARNERS, codes.FailedPrecondition, ErrTooManyLearners},
	{catalogpb.ErrorReason_LEASE_EXISTS, codes.AlreadyExists, ErrLeaseExists},
	{catalogpb.ErrorReason_LEASE_TTL_OUT_OF_RANGE, codes.InvalidArgument, ErrTTLOutOfRange},
	{catalogpb.ErrorReason_SERVICE_NOT_FOUND, codes.NotFound, ErrServiceNotFound},
	{catalogpb.ErrorReason_INSTANCE_NOT_FOUND, codes.NotFound, ErrInstanceNotFound},
	{catalogpb.ErrorReason_SERVICE_NOT_EMPTY, codes.FailedPrecondition, ErrServiceNotEmpty},
	{catalogpb.ErrorReason_EPOCH_MISMATCH, codes.FailedPrecondition, ErrEpochMismatch},
	{catalogpb.ErrorReason_WATCH_TOO_SLOW, codes.ResourceExhausted, ErrWatchTooSlow},
	{catalogpb.ErrorReason_WATCH_ID_EXISTS, codes.AlreadyExists, ErrWatchIDExists},
	{catalogpb.ErrorReason_WATCH_NOT_FOUND, codes.NotFound, ErrWatchNotFound},
	{catalogpb.ErrorReason_NOT_LEADER, codes.Unavailable, ErrNotLeader},
	{catalogpb.ErrorReason_LOCK_NOT_HELD, codes.FailedPrecondition, ErrNotHeld},
	{catalogpb.ErrorReason_LOCK_KIND_MISMATCH, codes.FailedPrecondition, ErrKindMismatch},
	{catalogpb.ErrorReason_PERMITS_EXCEEDED, codes.FailedPrecondition, ErrPermitsExceeded},
	{catalogpb.ErrorReason_BARRIER_NOT_ENTERED, codes.FailedPrecondition, ErrNotEntered},
	{catalogpb.ErrorReason_BARRIER_MISMATCH, codes.FailedPrecondition, ErrBarrierMismatch},
	{catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND, codes.NotFound, ErrItemNotFound},
	{catalogpb.ErrorReason_WAIT_SUPERSEDED, codes.Aborted, ErrWaitSuperseded},

	{catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED, codes.InvalidArgument, ErrInvalidArgument},
	{catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED, codes.Unavailable, ErrUnavailable},
	{catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED, codes.DeadlineExceeded, context.DeadlineExceeded},
	{catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED, codes.Canceled, context.Canceled},
}

// sentinelFor returns the sentinel of a reason (a catalogpb.ErrorReason name,
// "" for none) and code, or nil when the table has no row for them.
func sentinelFor(reason string, code codes.Code) error {
	if reason != "" {
		for _, row := range errorTable {
			if row.reason != catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED && row.reason.String() == reason {
				return row.err
			}
		}
	}
	for _, row := range errorTable {
		if row.reason == catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED && row.code == code {
			return row.err
		}
	}
	return nil
}

// An Error is a failure answered by a server (or by the gRPC layer on the way).
// errors.Is matches it against the sentinel of its reason or code; status.Code
// and status.FromError still see the original gRPC status.
type Error struct {
	// Code is the gRPC code.
	Code codes.Code
	// Reason is the catalogpb.ErrorReason name from the ErrorInfo detail of
	// domain "catalogd", or "" when the server attached none.
	Reason string
	// Message is the server's message.
	Message string

	sentinel error
	status   *status.Status
}

// Error returns the server's message, which says what was wrong.
func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if e.sentinel != nil {
		return e.sentinel.Error()
	}
	return "rpc error: code = " + e.Code.String()
}

// Unwrap returns the sentinel the error maps to, or nil.
func (e *Error) Unwrap() error { return e.sentinel }

// GRPCStatus returns the gRPC status the error came from.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// toError maps an error returned by a generated client to an *Error. Errors
// that carry no gRPC status are returned unchanged.
func toError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			e.Reason = info.GetReason()
			break
		}
	}
	e.sentinel = sentinelFor(e.Reason, e.Code)
	return e
}
