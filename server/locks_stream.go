package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The methods Lock.Stream's calls are counted as.
const (
	lockMethod   = "/catalogd.v1.Lock/Lock"
	unlockMethod = "/catalogd.v1.Lock/Unlock"
)

// maxStreamCalls bounds the calls in flight on one Lock.Stream.
const maxStreamCalls = 10000

// Stream serves Lock and Unlock calls over one stream, each in its own
// goroutine, answered as the unary calls would be. A call is ended by its
// timeout, by a cancel naming it, or by the end of the stream.
func (l *lockService) Stream(stream catalogpb.Lock_StreamServer) error {
	ctx, cancelAll := context.WithCancel(stream.Context())
	var (
		mu     sync.Mutex
		calls  = make(map[uint64]context.CancelFunc)
		sendMu sync.Mutex
		wg     sync.WaitGroup
	)
	defer func() {
		cancelAll()
		wg.Wait()
	}()
	send := func(resp *catalogpb.LockStreamResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		// A failed send means the stream is over; Recv reports it.
		_ = stream.Send(resp)
	}
	sendErr := func(id uint64, err error) {
		b, merr := proto.Marshal(status.Convert(err).Proto())
		if merr != nil {
			b, _ = proto.Marshal(status.New(codes.Internal, err.Error()).Proto())
		}
		send(&catalogpb.LockStreamResponse{CallId: id, Result: &catalogpb.LockStreamResponse_Error{Error: b}})
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		id := req.GetCallId()
		if id == 0 {
			return status.Error(codes.InvalidArgument, "lock stream: call_id must be non-zero")
		}
		if _, ok := req.GetOp().(*catalogpb.LockStreamRequest_Cancel); ok {
			mu.Lock()
			if cancel := calls[id]; cancel != nil {
				cancel()
			}
			mu.Unlock()
			continue
		}
		if t := req.GetTimeoutMs(); t < 0 {
			sendErr(id, toGRPCError(fmt.Errorf("%w: timeout_ms must be >= 0 (0: none), got %d", locks.ErrInvalidArgument, t)))
			continue
		}
		mu.Lock()
		_, dup := calls[id]
		n := len(calls)
		mu.Unlock()
		switch {
		case dup:
			sendErr(id, toGRPCError(fmt.Errorf("%w: call_id %d names a call still in flight on this stream", locks.ErrInvalidArgument, id)))
			continue
		case n >= maxStreamCalls:
			sendErr(id, status.Errorf(codes.ResourceExhausted, "lock stream: %d calls in flight, the most one stream may carry; wait for some to end or open another stream", n))
			continue
		}
		var run func(context.Context) (*catalogpb.LockStreamResponse, error)
		var method string
		switch op := req.GetOp().(type) {
		case *catalogpb.LockStreamRequest_Lock:
			method = lockMethod
			run = func(ctx context.Context) (*catalogpb.LockStreamResponse, error) {
				resp, err := l.Lock(ctx, op.Lock)
				return &catalogpb.LockStreamResponse{CallId: id, Result: &catalogpb.LockStreamResponse_Lock{Lock: resp}}, err
			}
		case *catalogpb.LockStreamRequest_Unlock:
			method = unlockMethod
			run = func(ctx context.Context) (*catalogpb.LockStreamResponse, error) {
				resp, err := l.Unlock(ctx, op.Unlock)
				return &catalogpb.LockStreamResponse{CallId: id, Result: &catalogpb.LockStreamResponse_Unlock{Unlock: resp}}, err
			}
		default:
			sendErr(id, toGRPCError(fmt.Errorf("%w: a lock stream call must be a lock, an unlock or a cancel", locks.ErrInvalidArgument)))
			continue
		}
		var callCtx context.Context
		var cancel context.CancelFunc
		if t := req.GetTimeoutMs(); t > 0 {
			callCtx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Millisecond)
		} else {
			callCtx, cancel = context.WithCancel(ctx)
		}
		mu.Lock()
		calls[id] = cancel
		mu.Unlock()
		wg.Go(func() {
			start := time.Now()
			resp, err := run(callCtx)
			mu.Lock()
			delete(calls, id)
			mu.Unlock()
			cancel()
			if err != nil {
				err = toGRPCError(err)
				l.s.metrics.ObserveCall(method, err, time.Since(start))
				sendErr(id, err)
				return
			}
			l.s.metrics.ObserveCall(method, nil, time.Since(start))
			send(resp)
		})
	}
}
