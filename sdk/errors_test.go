package sdk

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorMapping(t *testing.T) {
	otherDomain, err := status.New(codes.InvalidArgument, "key is empty").
		WithDetails(&errdetails.ErrorInfo{Domain: "elsewhere", Reason: "KEY_EMPTY"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		serverErr func(t *testing.T) error
		want      error
		code      codes.Code
		reason    string
		msg       string
	}{
		{"key empty", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_KEY_EMPTY, "key must not be empty"), ErrKeyEmpty, codes.InvalidArgument, "KEY_EMPTY", "key must not be empty"},
		{"key too large", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_KEY_TOO_LARGE, "key must be 1..4096 bytes, got 5000"), ErrKeyTooLarge, codes.InvalidArgument, "KEY_TOO_LARGE", "key must be 1..4096 bytes, got 5000"},
		{"value too large", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_VALUE_TOO_LARGE, "value too big"), ErrValueTooLarge, codes.InvalidArgument, "VALUE_TOO_LARGE", "value too big"},
		{"request too large", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_REQUEST_TOO_LARGE, "request too big"), ErrRequestTooLarge, codes.InvalidArgument, "REQUEST_TOO_LARGE", "request too big"},
		{"too many ops", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_TOO_MANY_OPS, "at most 128 ops"), ErrTooManyOps, codes.InvalidArgument, "TOO_MANY_OPS", "at most 128 ops"},
		{"duplicate key", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_DUPLICATE_KEY, "key k twice"), ErrDuplicateKey, codes.InvalidArgument, "DUPLICATE_KEY", "key k twice"},
		{"lease not found", reasonCase(codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND, "lease 7 not found"), ErrLeaseNotFound, codes.NotFound, "LEASE_NOT_FOUND", "lease 7 not found"},
		{"invalid continue token", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN, "bad token"), ErrInvalidContinueToken, codes.InvalidArgument, "INVALID_CONTINUE_TOKEN", "bad token"},
		{"invalid limit", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_INVALID_LIMIT, "limit must be >= 0, got -1"), ErrInvalidLimit, codes.InvalidArgument, "INVALID_LIMIT", "limit must be >= 0, got -1"},
		{"invalid argument reason", reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT, "nope"), ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT", "nope"},
		{"compacted", reasonCase(codes.OutOfRange, catalogpb.ErrorReason_COMPACTED, "revision 3 compacted, oldest is 9"), ErrCompacted, codes.OutOfRange, "COMPACTED", "revision 3 compacted, oldest is 9"},
		{"no leader", reasonCase(codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader"), ErrNoLeader, codes.Unavailable, "NO_LEADER", "no leader"},
		{"stopped", reasonCase(codes.Unavailable, catalogpb.ErrorReason_STOPPED, "server stopping"), ErrStopped, codes.Unavailable, "STOPPED", "server stopping"},
		{"timeout", reasonCase(codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT, "commit timed out"), ErrTimeout, codes.DeadlineExceeded, "TIMEOUT", "commit timed out"},
		{"plain unavailable", plainCase(codes.Unavailable, "node down"), ErrUnavailable, codes.Unavailable, "", "node down"},
		{"plain invalid argument", plainCase(codes.InvalidArgument, "bad"), ErrInvalidArgument, codes.InvalidArgument, "", "bad"},
		{"plain deadline", plainCase(codes.DeadlineExceeded, "slow"), context.DeadlineExceeded, codes.DeadlineExceeded, "", "slow"},
		{"plain canceled", plainCase(codes.Canceled, "gone"), context.Canceled, codes.Canceled, "", "gone"},
		{"reason of another domain is ignored", func(*testing.T) error { return otherDomain.Err() }, ErrInvalidArgument, codes.InvalidArgument, "", "key is empty"},
		{"unknown reason falls back to code", reasonCase(codes.Unavailable, catalogpb.ErrorReason(99), "future"), ErrUnavailable, codes.Unavailable, "99", "future"},
	}
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}, MaxRetries: -1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.failNext(tt.serverErr(t))
			_, err := c.Get(t.Context(), "k")
			if !errors.Is(err, tt.want) {
				t.Fatalf("Get error = %v, want errors.Is %v", err, tt.want)
			}
			if err.Error() != tt.msg {
				t.Errorf("Error() = %q, want the server's message %q", err.Error(), tt.msg)
			}
			if got := status.Code(err); got != tt.code {
				t.Errorf("status.Code = %v, want %v", got, tt.code)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *Error", err)
			}
			if e.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", e.Reason, tt.reason)
			}
			for _, row := range errorTable {
				if row.err != tt.want && errors.Is(err, row.err) {
					t.Errorf("error also matches %v", row.err)
				}
			}
		})
	}
}

func reasonCase(code codes.Code, reason catalogpb.ErrorReason, msg string) func(*testing.T) error {
	return func(t *testing.T) error { return reasonErr(t, code, reason, msg) }
}

func plainCase(code codes.Code, msg string) func(*testing.T) error {
	return func(*testing.T) error { return status.Error(code, msg) }
}

func TestEveryReasonHasASentinel(t *testing.T) {
	for n, name := range catalogpb.ErrorReason_name {
		if n == 0 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if sentinelFor(name, codes.Unknown) == nil {
				t.Errorf("reason %s has no row in errorTable", name)
			}
		})
	}
}

func TestContextErrors(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})

	t.Run("deadline", func(t *testing.T) {
		srv.failNext(errHang)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Get(ctx, "k")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		srv.failNext(errHang)
		callC := srv.notifyCalls()
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-callC
			cancel()
		}()
		_, err := c.Put(ctx, "k", "v")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put error = %v, want context.Canceled", err)
		}
	})
}
