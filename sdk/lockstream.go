package sdk

import (
	"context"
	"errors"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A lockStream carries the client's Lock and Unlock calls over one
// Lock.Stream, opened at the first call and again after it broke: each call
// then costs one message each way instead of an HTTP/2 stream of its own.
// A call ends as the unary call would (same response, same status error);
// a stream that breaks fails the calls in flight with its error, which the
// callers' retries treat as a lost connection. A server without Lock.Stream
// (Unimplemented) gets unary calls from then on.
//
// The stream goes to the raft leader when the client can reach it (see
// Client.leaderConn): every Lock and Unlock is a raft write, which a
// follower forwards to the leader and answers only once the commit has come
// back to it. When an answer shows a newer raft term than the leader's when
// the stream was opened, the stream is retired: later calls open a new one
// (on the leader of the day), and the old one ends once its calls have.
type lockStream struct {
	conn *grpc.ClientConn
	// leader returns a connection to the leader and its term, or nil if
	// none can be used; a nil leader means conn always.
	leader func(context.Context) (*grpc.ClientConn, uint64)

	mu  sync.Mutex
	cur *lockStreamConn
	// opening is closed when the stream being opened is open (or failed).
	opening chan struct{}
	unary   bool // the server does not serve Lock.Stream
	nextID  uint64
	closed  bool
}

// A lockStreamConn is one opened Lock.Stream and its calls in flight.
type lockStreamConn struct {
	stream catalogpb.Lock_StreamClient
	cancel context.CancelFunc
	sendMu sync.Mutex
	// term is the leader's term when the stream was opened on it; 0 when
	// it was opened on another server.
	term uint64

	mu    sync.Mutex
	calls map[uint64]chan *catalogpb.LockStreamResponse
	err   error // set when the stream ended; calls then fail with it
	// retired: no new calls; the stream ends when the last call has.
	retired bool
}

// lockCaller is the LockClient the helpers use: Lock and Unlock go over the
// client's lock stream, the rest unary.
type lockCaller struct {
	catalogpb.LockClient
	ls *lockStream
}

func (c lockCaller) Lock(ctx context.Context, req *catalogpb.LockRequest, _ ...grpc.CallOption) (*catalogpb.LockResponse, error) {
	resp, err := c.ls.call(ctx, &catalogpb.LockStreamRequest{Op: &catalogpb.LockStreamRequest_Lock{Lock: req}}, func(ctx context.Context) (*catalogpb.LockStreamResponse, error) {
		r, err := c.LockClient.Lock(ctx, req)
		return &catalogpb.LockStreamResponse{Result: &catalogpb.LockStreamResponse_Lock{Lock: r}}, err
	})
	if err != nil {
		return nil, err
	}
	return resp.GetLock(), nil
}

func (c lockCaller) Unlock(ctx context.Context, req *catalogpb.UnlockRequest, _ ...grpc.CallOption) (*catalogpb.UnlockResponse, error) {
	resp, err := c.ls.call(ctx, &catalogpb.LockStreamRequest{Op: &catalogpb.LockStreamRequest_Unlock{Unlock: req}}, func(ctx context.Context) (*catalogpb.LockStreamResponse, error) {
		r, err := c.LockClient.Unlock(ctx, req)
		return &catalogpb.LockStreamResponse{Result: &catalogpb.LockStreamResponse_Unlock{Unlock: r}}, err
	})
	if err != nil {
		return nil, err
	}
	return resp.GetUnlock(), nil
}

// errLockStreamClosed ends the calls of a client being closed.
var errLockStreamClosed = status.Error(codes.Canceled, "sdk: client closed")

// errLockStreamRetired ends a retired stream; it has no calls left to fail.
var errLockStreamRetired = status.Error(codes.Unavailable, "sdk: lock stream retired after a change of leader")

// call sends req on the stream and waits for its response, ctx's end (then
// it cancels the call on the server) or the stream's end. unary makes the
// call when the server has no Lock.Stream.
func (ls *lockStream) call(ctx context.Context, req *catalogpb.LockStreamRequest,
	unary func(context.Context) (*catalogpb.LockStreamResponse, error)) (*catalogpb.LockStreamResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	sc, id, ch, err := ls.open(ctx)
	if err != nil {
		return nil, err
	}
	if sc == nil {
		return unary(ctx)
	}
	req.CallId = id
	if deadline, ok := ctx.Deadline(); ok {
		req.TimeoutMs = max(time.Until(deadline).Milliseconds(), 1)
	}
	if err := sc.send(req); err != nil {
		sc.forget(id)
		if ls.isUnary() {
			return unary(ctx)
		}
		ls.broken(sc, err)
		return nil, sc.failure(err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			if ls.isUnary() {
				// The server has no Lock.Stream: it never saw the call.
				return unary(ctx)
			}
			return nil, sc.failure(nil)
		}
		if b := resp.GetError(); b != nil {
			var st spb.Status
			if err := proto.Unmarshal(b, &st); err != nil {
				return nil, status.Errorf(codes.Internal, "sdk: undecodable error from the lock stream: %v", err)
			}
			return nil, status.ErrorProto(&st)
		}
		return resp, nil
	case <-ctx.Done():
		if sc.forget(id) {
			// Best effort: a stream that broke ended the call anyway.
			_ = sc.send(&catalogpb.LockStreamRequest{CallId: id, Op: &catalogpb.LockStreamRequest_Cancel{Cancel: true}})
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (ls *lockStream) isUnary() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.unary
}

// open returns the stream (opening it if needed) with a call registered on
// it, or a nil stream when calls must be unary. Opening may wait for a
// connection: it is bounded by ctx, and other calls wait for it only as long
// as their own contexts allow.
func (ls *lockStream) open(ctx context.Context) (*lockStreamConn, uint64, chan *catalogpb.LockStreamResponse, error) {
	for {
		ls.mu.Lock()
		switch {
		case ls.closed:
			ls.mu.Unlock()
			return nil, 0, nil, errLockStreamClosed
		case ls.unary:
			ls.mu.Unlock()
			return nil, 0, nil, nil
		case ls.cur != nil:
			sc, id, ch := ls.register()
			ls.mu.Unlock()
			if sc == nil {
				// Ended between the receiver noticing and dropping it:
				// unary this once rather than fail a call the stream
				// never carried.
				return nil, 0, nil, nil
			}
			return sc, id, ch, nil
		case ls.opening != nil:
			opening := ls.opening
			ls.mu.Unlock()
			select {
			case <-opening:
				continue
			case <-ctx.Done():
				return nil, 0, nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		opening := make(chan struct{})
		ls.opening = opening
		ls.mu.Unlock()

		// The stream outlives the call that opens it, but its opening is
		// bounded by that call's context.
		sctx, cancel := context.WithCancel(context.Background())
		stopCancel := context.AfterFunc(ctx, cancel)
		conn, term := ls.conn, uint64(0)
		if ls.leader != nil {
			if lc, t := ls.leader(sctx); lc != nil {
				conn, term = lc, t
			}
		}
		stream, err := catalogpb.NewLockClient(conn).Stream(sctx)
		if !stopCancel() && err == nil {
			err = ctx.Err()
		}
		ls.mu.Lock()
		ls.opening = nil
		close(opening)
		if err == nil && ls.closed {
			err = errLockStreamClosed
		}
		if err != nil {
			ls.mu.Unlock()
			cancel()
			if ctx.Err() != nil {
				return nil, 0, nil, status.FromContextError(ctx.Err()).Err()
			}
			return nil, 0, nil, err
		}
		sc := &lockStreamConn{stream: stream, cancel: cancel, term: term, calls: make(map[uint64]chan *catalogpb.LockStreamResponse)}
		ls.cur = sc
		ls.mu.Unlock()
		go ls.receive(sc)
	}
}

// register adds a call to the current stream; ls.mu is held. It returns a
// nil stream if that stream has ended.
func (ls *lockStream) register() (*lockStreamConn, uint64, chan *catalogpb.LockStreamResponse) {
	sc := ls.cur
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.err != nil {
		return nil, 0, nil
	}
	ls.nextID++
	ch := make(chan *catalogpb.LockStreamResponse, 1)
	sc.calls[ls.nextID] = ch
	return sc, ls.nextID, ch
}

// receive hands each response to its call until the stream ends.
func (ls *lockStream) receive(sc *lockStreamConn) {
	for {
		resp, err := sc.stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				ls.mu.Lock()
				ls.unary = true
				ls.mu.Unlock()
			}
			ls.broken(sc, err)
			return
		}
		if sc.term != 0 && responseTerm(resp) > sc.term {
			ls.retire(sc)
		}
		sc.mu.Lock()
		ch := sc.calls[resp.GetCallId()]
		delete(sc.calls, resp.GetCallId())
		sc.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
		sc.endIfRetiredAndIdle()
	}
}

// responseTerm is the raft term an answer was given in (0 for an error).
func responseTerm(resp *catalogpb.LockStreamResponse) uint64 {
	switch r := resp.GetResult().(type) {
	case *catalogpb.LockStreamResponse_Lock:
		return r.Lock.GetHeader().GetRaftTerm()
	case *catalogpb.LockStreamResponse_Unlock:
		return r.Unlock.GetHeader().GetRaftTerm()
	}
	return 0
}

// retire stops new calls going to sc (the leader it was opened on may have
// lost its place): the next call opens a new stream.
func (ls *lockStream) retire(sc *lockStreamConn) {
	ls.mu.Lock()
	if ls.cur == sc {
		ls.cur = nil
	}
	ls.mu.Unlock()
	sc.mu.Lock()
	sc.retired = true
	sc.mu.Unlock()
}

// endIfRetiredAndIdle ends a retired stream with no call left in flight.
func (sc *lockStreamConn) endIfRetiredAndIdle() {
	sc.mu.Lock()
	idle := sc.retired && len(sc.calls) == 0 && sc.err == nil
	sc.mu.Unlock()
	if idle {
		sc.end(errLockStreamRetired)
	}
}

// broken drops sc, if it is the current stream, and fails its calls.
func (ls *lockStream) broken(sc *lockStreamConn, err error) {
	ls.mu.Lock()
	if ls.cur == sc {
		ls.cur = nil
	}
	ls.mu.Unlock()
	sc.end(err)
}

func (ls *lockStream) close() {
	ls.mu.Lock()
	ls.closed = true
	sc := ls.cur
	ls.cur = nil
	ls.mu.Unlock()
	if sc != nil {
		sc.end(errLockStreamClosed)
	}
}

func (sc *lockStreamConn) send(req *catalogpb.LockStreamRequest) error {
	sc.sendMu.Lock()
	defer sc.sendMu.Unlock()
	return sc.stream.Send(req)
}

// forget removes call id; it reports whether the call was still in flight.
// A retired stream left with no call ends.
func (sc *lockStreamConn) forget(id uint64) bool {
	sc.mu.Lock()
	_, ok := sc.calls[id]
	delete(sc.calls, id)
	sc.mu.Unlock()
	if ok {
		sc.endIfRetiredAndIdle()
	}
	return ok
}

// end fails the calls in flight with err and closes the stream.
func (sc *lockStreamConn) end(err error) {
	sc.mu.Lock()
	if sc.err == nil {
		sc.err = err
	}
	calls := sc.calls
	sc.calls = make(map[uint64]chan *catalogpb.LockStreamResponse)
	sc.mu.Unlock()
	for _, ch := range calls {
		close(ch)
	}
	sc.cancel()
}

// failure is the error a call fails with when the stream ended under it:
// the stream's status, or Unavailable (the connection was lost, as a unary
// call would report it).
func (sc *lockStreamConn) failure(sendErr error) error {
	sc.mu.Lock()
	err := sc.err
	sc.mu.Unlock()
	if err == nil {
		err = sendErr
	}
	if errors.Is(err, errLockStreamClosed) {
		return err
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown && st.Code() != codes.Canceled {
		return err
	}
	return status.Errorf(codes.Unavailable, "sdk: the lock stream ended: %v", err)
}
