package registry

import (
	"errors"
	"strconv"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Sentinel errors. Every error the package returns for a bad request wraps one
// of them, with a detail that says what was wrong and what is allowed; match
// them with errors.Is, or turn them into a wire reason with Reason.
var (
	ErrKeyEmpty             = errors.New("registry: key is empty")
	ErrKeyTooLarge          = errors.New("registry: key is too large")
	ErrValueTooLarge        = errors.New("registry: value is too large")
	ErrRequestTooLarge      = errors.New("registry: request is too large")
	ErrTooManyOps           = errors.New("registry: too many operations in txn request")
	ErrDuplicateKey         = errors.New("registry: duplicate key given in txn request")
	ErrLeaseNotFound        = errors.New("registry: lease not found")
	ErrInvalidContinueToken = errors.New("registry: invalid continue token")
	ErrInvalidLimit         = errors.New("registry: invalid limit")
	ErrInvalidArgument      = errors.New("registry: invalid argument")
	ErrServiceNotFound      = errors.New("registry: service not found")
	ErrInstanceNotFound     = errors.New("registry: instance not found")
	ErrServiceNotEmpty      = errors.New("registry: service still has instances")
	ErrEpochMismatch        = errors.New("registry: shard map epoch mismatch")
)

var reasons = [...]struct {
	err    error
	reason catalogpb.ErrorReason
}{
	{ErrKeyEmpty, catalogpb.ErrorReason_KEY_EMPTY},
	{ErrKeyTooLarge, catalogpb.ErrorReason_KEY_TOO_LARGE},
	{ErrValueTooLarge, catalogpb.ErrorReason_VALUE_TOO_LARGE},
	{ErrRequestTooLarge, catalogpb.ErrorReason_REQUEST_TOO_LARGE},
	{ErrTooManyOps, catalogpb.ErrorReason_TOO_MANY_OPS},
	{ErrDuplicateKey, catalogpb.ErrorReason_DUPLICATE_KEY},
	{ErrLeaseNotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND},
	{ErrInvalidContinueToken, catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN},
	{ErrInvalidLimit, catalogpb.ErrorReason_INVALID_LIMIT},
	{ErrInvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT},
	{ErrServiceNotFound, catalogpb.ErrorReason_SERVICE_NOT_FOUND},
	{ErrInstanceNotFound, catalogpb.ErrorReason_INSTANCE_NOT_FOUND},
	{ErrServiceNotEmpty, catalogpb.ErrorReason_SERVICE_NOT_EMPTY},
	{ErrEpochMismatch, catalogpb.ErrorReason_EPOCH_MISMATCH},
}

// Reason maps an error of this package (wrapped or not) to the wire reason the
// server attaches to its gRPC status. Any other error, and nil, give
// ERROR_REASON_UNSPECIFIED.
func Reason(err error) catalogpb.ErrorReason {
	if err == nil {
		return catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// maxQuotedKey bounds how much of a key an error message repeats: keys may be
// 4 KiB and messages end up in logs and terminals.
const maxQuotedKey = 64

// quoteKey formats a key for an error message.
func quoteKey(key []byte) string {
	if len(key) <= maxQuotedKey {
		return strconv.Quote(string(key))
	}
	return strconv.Quote(string(key[:maxQuotedKey])) + "..."
}
