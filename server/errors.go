package server

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

// errorDomain is the ErrorInfo domain of every error catalogd attaches a reason to.
const errorDomain = "catalogd"

type grpcError struct {
	code   codes.Code
	reason catalogpb.ErrorReason
}

// errorTable is the one place that maps domain errors to gRPC codes and
// reasons; clients map them back by reason (sdk/errors.go).
var errorTable = []struct {
	err error
	grpcError
}{
	{registry.ErrKeyEmpty, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_KEY_EMPTY}},
	{registry.ErrKeyTooLarge, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_KEY_TOO_LARGE}},
	{registry.ErrValueTooLarge, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_VALUE_TOO_LARGE}},
	{registry.ErrRequestTooLarge, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_REQUEST_TOO_LARGE}},
	{registry.ErrTooManyOps, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_TOO_MANY_OPS}},
	{registry.ErrDuplicateKey, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_DUPLICATE_KEY}},
	{registry.ErrInvalidContinueToken, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN}},
	{registry.ErrInvalidLimit, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_LIMIT}},
	{registry.ErrInvalidArgument, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT}},
	{registry.ErrLeaseNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND}},
	{consensus.ErrNoLeader, grpcError{codes.Unavailable, catalogpb.ErrorReason_NO_LEADER}},
	{consensus.ErrStopped, grpcError{codes.Unavailable, catalogpb.ErrorReason_STOPPED}},
	{consensus.ErrTimeout, grpcError{codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT}},
	{errRequestTimeout, grpcError{codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT}},
	{errMemberNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_MEMBER_NOT_FOUND}},
	{errMemberExists, grpcError{codes.AlreadyExists, catalogpb.ErrorReason_MEMBER_EXISTS}},
	{errMemberNotLearner, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_MEMBER_NOT_LEARNER}},
	{errLearnerNotReady, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_LEARNER_NOT_READY}},
	{errUnhealthyCluster, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_UNHEALTHY_CLUSTER}},
	{errChangeInProgress, grpcError{codes.Aborted, catalogpb.ErrorReason_MEMBERSHIP_CHANGE_IN_PROGRESS}},
	{errTooManyLearners, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_TOO_MANY_LEARNERS}},
	{errInvalidMember, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT}},
	{lease.ErrNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND}},
	{lease.ErrExists, grpcError{codes.AlreadyExists, catalogpb.ErrorReason_LEASE_EXISTS}},
	{lease.ErrTTLOutOfRange, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_LEASE_TTL_OUT_OF_RANGE}},
	{lease.ErrInvalidArgument, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT}},
	{locks.ErrInvalidArgument, grpcError{codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT}},
	{locks.ErrLeaseNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND}},
	{locks.ErrNotHeld, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_NOT_HELD}},
	{locks.ErrKindMismatch, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_KIND_MISMATCH}},
	// The limit is state (fixed at first use), so asking past it is a
	// precondition failure, not a malformed request.
	{locks.ErrPermitsExceeded, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_PERMITS_EXCEEDED}},
	{locks.ErrNotEntered, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_BARRIER_NOT_ENTERED}},
	{locks.ErrBarrierMismatch, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_BARRIER_MISMATCH}},
	{locks.ErrItemNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND}},
	{locks.ErrSuperseded, grpcError{codes.Aborted, catalogpb.ErrorReason_WAIT_SUPERSEDED}},
	{registry.ErrServiceNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND}},
	{registry.ErrInstanceNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_INSTANCE_NOT_FOUND}},
	{registry.ErrServiceNotEmpty, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_SERVICE_NOT_EMPTY}},
	{registry.ErrEpochMismatch, grpcError{codes.FailedPrecondition, catalogpb.ErrorReason_EPOCH_MISMATCH}},
	{errCompacted, grpcError{codes.OutOfRange, catalogpb.ErrorReason_COMPACTED}},
	{errWatchTooSlow, grpcError{codes.ResourceExhausted, catalogpb.ErrorReason_WATCH_TOO_SLOW}},
	{errWatchIDExists, grpcError{codes.AlreadyExists, catalogpb.ErrorReason_WATCH_ID_EXISTS}},
	{errWatchNotFound, grpcError{codes.NotFound, catalogpb.ErrorReason_WATCH_NOT_FOUND}},
	{errNotLeader, grpcError{codes.Unavailable, catalogpb.ErrorReason_NOT_LEADER}},
}

// Errors of the server's own services (watch, lease keep-alive).
var (
	errCompacted     = errors.New("server: revision compacted")
	errWatchTooSlow  = errors.New("server: watcher too slow")
	errWatchIDExists = errors.New("server: watch id already in use on this stream")
	errWatchNotFound = errors.New("server: no such watch on this stream")
	errNotLeader     = errors.New("server: this member is not the leader")
)

// errRequestTimeout means the server's own deadline for a request passed (the
// caller set none): a write may or may not have been applied.
var errRequestTimeout = errors.New("server: request timed out (it may or may not have been applied)")

// toGRPCError maps err through errorTable. Context errors of the caller pass
// through as Canceled / DeadlineExceeded.
func toGRPCError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			st := status.New(e.code, err.Error())
			if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: e.reason.String(), Domain: errorDomain}); derr == nil {
				st = withInfo
			}
			return st.Err()
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
