package server

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A keepAliveRelay carries a follower's keep-alives to the leader over one
// shared stream, whatever the number of client streams: a client that opens
// a stream per renewal (etcd's KeepAliveOnce) then costs the leader no stream
// set-up. The leader answers a stream's requests in order, so responses are
// matched to requests first in, first out.
type keepAliveRelay struct {
	s *Server

	// sendMu makes queueing a reply and sending its request one step, so
	// requests leave in the order of pending. mu guards the rest; the
	// receiver takes only mu, so a send held up by flow control never holds
	// up the replies that would free it.
	sendMu  sync.Mutex
	mu      sync.Mutex
	up      *relayStream // nil until the first request, and after a failure
	closing bool
}

// A relayStream is one stream to one leader.
type relayStream struct {
	lead   uint64
	stream catalogpb.Lease_KeepAliveClient
	cancel context.CancelFunc
	// pending are the replies awaited, oldest first; guarded by the relay's mu.
	pending []chan<- relayReply
	failed  bool
}

type relayReply struct {
	resp *catalogpb.LeaseKeepAliveResponse
	err  error
}

func newKeepAliveRelay(s *Server) *keepAliveRelay { return &keepAliveRelay{s: s} }

// send forwards a keep-alive of lease id; its reply (or the error that ended
// the stream to the leader) arrives on reply, which must have room for it:
// the relay never blocks on a caller.
func (r *keepAliveRelay) send(id int64, reply chan<- relayReply) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return fmt.Errorf("%w: member %x is stopping", errNotLeader, r.s.id)
	}
	up := r.up
	if up != nil && up.lead != r.s.node.Leader() {
		r.failLocked(up, fmt.Errorf("%w: the leader changed (it was %x); reconnect", errNotLeader, up.lead))
		up = nil
	}
	if up == nil {
		var err error
		if up, err = r.openLocked(); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	up.pending = append(up.pending, reply)
	r.mu.Unlock()
	// On failure the receiver sees the stream end and fails every reply
	// awaited, this one included.
	_ = up.stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id})
	return nil
}

// openLocked opens a stream to the current leader. It serves every client
// of this member, so it lives until it fails or the relay closes.
func (r *keepAliveRelay) openLocked() (*relayStream, error) {
	conn, fctx, lead, err := r.s.leaderConn(context.Background())
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(fctx)
	stream, err := catalogpb.NewLeaseClient(conn).KeepAlive(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: cannot reach leader %x: %v", errNotLeader, lead, err)
	}
	up := &relayStream{lead: lead, stream: stream, cancel: cancel}
	r.up = up
	go r.receive(up)
	return up, nil
}

// receive hands each reply of up to the oldest request awaiting one.
func (r *keepAliveRelay) receive(up *relayStream) {
	for {
		resp, err := up.stream.Recv()
		r.mu.Lock()
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%w: leader %x closed the stream", errNotLeader, up.lead)
			}
			r.failLocked(up, forwardedStreamEnd(context.Background(), up.lead, err))
			r.mu.Unlock()
			return
		}
		if len(up.pending) == 0 {
			r.failLocked(up, fmt.Errorf("%w: leader %x answered a keep-alive that was not asked", errNotLeader, up.lead))
			r.mu.Unlock()
			return
		}
		reply := up.pending[0]
		up.pending[0] = nil
		up.pending = up.pending[1:]
		r.mu.Unlock()
		reply <- relayReply{resp: resp}
	}
}

// failLocked ends up: every reply awaited gets err, and the next request
// opens a new stream.
func (r *keepAliveRelay) failLocked(up *relayStream, err error) {
	if up.failed {
		return
	}
	up.failed = true
	up.cancel()
	for _, reply := range up.pending {
		reply <- relayReply{err: err}
	}
	up.pending = nil
	if r.up == up {
		r.up = nil
	}
}

// close ends the relay's stream; later requests are refused.
func (r *keepAliveRelay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	if r.up != nil {
		r.failLocked(r.up, fmt.Errorf("%w: member %x is stopping", errNotLeader, r.s.id))
	}
}
