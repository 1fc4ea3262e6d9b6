package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/lease"
)

const (
	// maxChosenLeaseID bounds the ids the server chooses (2^53-1): they stay
	// exact in JSON and JavaScript clients.
	maxChosenLeaseID = 1<<53 - 1
	// grantIDAttempts is how many random ids a grant tries before it gives up.
	grantIDAttempts = 8
	// maxLeaseListLimit is the most leases one List returns.
	maxLeaseListLimit = 10000
)

// leaseService implements catalogpb.LeaseServer. Grants and revokes go
// through the log; keep-alives, time-to-live and lists answer from the
// leader's memory, and a follower forwards them to the leader.
type leaseService struct {
	catalogpb.UnimplementedLeaseServer
	s *Server
}

func (ls *leaseService) Grant(ctx context.Context, req *catalogpb.LeaseGrantRequest) (*catalogpb.LeaseGrantResponse, error) {
	s := ls.s
	if err := s.checkLeaseTTL(req.GetTtlSeconds()); err != nil {
		return nil, toGRPCError(err)
	}
	if req.GetId() < 0 {
		return nil, toGRPCError(fmt.Errorf("%w: id must be 0 (the server chooses) or a positive lease id, got %d", lease.ErrInvalidArgument, req.GetId()))
	}
	for attempt := 1; ; attempt++ {
		id := req.GetId()
		if id == 0 {
			id = rand.Int64N(maxChosenLeaseID) + 1
		}
		v, err := s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_LeaseGrant{
			LeaseGrant: &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: req.GetTtlSeconds()},
		}})
		if err != nil {
			if req.GetId() == 0 && errors.Is(err, lease.ErrExists) && attempt < grantIDAttempts {
				continue
			}
			return nil, toGRPCError(err)
		}
		resp := v.(*catalogpb.LeaseGrantResponse)
		resp.Header = s.header(resp.Header.GetRevision())
		return resp, nil
	}
}

func (ls *leaseService) Revoke(ctx context.Context, req *catalogpb.LeaseRevokeRequest) (*catalogpb.LeaseRevokeResponse, error) {
	if err := lease.ValidateID(req.GetId()); err != nil {
		return nil, toGRPCError(err)
	}
	v, err := ls.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_LeaseRevoke{
		LeaseRevoke: &catalogpb.LeaseRevokeCommand{Id: req.GetId()},
	}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := v.(*catalogpb.LeaseRevokeResponse)
	resp.Header = ls.s.header(resp.Header.GetRevision())
	return resp, nil
}

// KeepAlive renews leases in the leader's memory, one response per request,
// in order. On a follower each request goes to the leader through the
// member's shared stream (keepAliveRelay). A client's stream outlives
// leadership changes: each request is renewed by whoever leads when it
// arrives. Only requests in flight when the leader goes away fail, ending
// the stream with NOT_LEADER so that the client opens a new one.
func (ls *leaseService) KeepAlive(stream catalogpb.Lease_KeepAliveServer) error {
	s := ls.s
	if isForwarded(stream.Context()) {
		// A follower's relay: served by the leader only, and ended when it
		// stops leading, which fails the relay's requests in flight.
		if !s.isLeader() {
			return toGRPCError(fmt.Errorf("%w: member %x was asked as the leader but is not (leadership moved); reconnect", errNotLeader, s.id))
		}
		return ls.serveKeepAlive(stream)
	}
	if s.isLeader() {
		return ls.keepAliveOnLeader(stream)
	}
	return ls.keepAlive(stream)
}

// relayWindow bounds the keep-alives of one client stream in flight.
const relayWindow = 256

// keepAlive serves a client's stream that began on a follower, keeping up
// to relayWindow requests in flight through the relay (each is renewed here
// instead should this member have become the leader).
func (ls *leaseService) keepAlive(stream catalogpb.Lease_KeepAliveServer) error {
	ctx := stream.Context()
	// queue holds one reply channel per request, in request order.
	queue := make(chan chan relayReply, relayWindow)
	errc := make(chan error, 1)
	go func() {
		defer close(queue)
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			reply := make(chan relayReply, 1)
			select {
			case queue <- reply:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
			ls.renewOrRelay(ctx, req.GetId(), reply)
		}
	}()
	for {
		var reply chan relayReply
		var ok bool
		select {
		case reply, ok = <-queue:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if !ok {
			if err := <-errc; err != io.EOF {
				return err
			}
			return nil // the client closed and every reply was sent
		}
		var rep relayReply
		select {
		case rep = <-reply:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if rep.err != nil {
			return toGRPCError(rep.err)
		}
		if err := stream.Send(rep.resp); err != nil {
			return err
		}
	}
}

// renewOrRelay renews lease id here when this member leads, and through the
// relay otherwise; the answer goes to reply.
func (ls *leaseService) renewOrRelay(ctx context.Context, id int64, reply chan<- relayReply) {
	if resp, err, ok := ls.renewHere(ctx, id); ok {
		reply <- relayReply{resp: resp, err: err}
		return
	}
	if err := ls.s.relay.send(id, reply); err != nil {
		reply <- relayReply{err: err}
	}
}

// renewHere answers a keep-alive of lease id on this member: ok is false
// when it does not lead, and the request must go to the leader.
func (ls *leaseService) renewHere(ctx context.Context, id int64) (resp *catalogpb.LeaseKeepAliveResponse, err error, ok bool) {
	s := ls.s
	if id <= 0 {
		// No such lease can exist.
		return &catalogpb.LeaseKeepAliveResponse{Header: s.header(s.sm.Revision()), Id: id}, nil, true
	}
	if !s.isLeader() {
		return nil, nil, false
	}
	ttl, err := s.leases.renew(ctx, id)
	if err == nil {
		return &catalogpb.LeaseKeepAliveResponse{Header: s.header(s.sm.Revision()), Id: id, TtlSeconds: ttl}, nil, true
	}
	if errors.Is(err, errNotLeader) && !s.isLeader() {
		return nil, nil, false // leadership moved while renewing
	}
	return nil, err, true
}

// keepAliveOnLeader serves a client's stream that began on the leader: one
// request at a time, with no goroutine of its own, which is the cheapest for
// the common short streams (etcd's KeepAliveOnce opens one per renewal).
// Should this member stop leading, the rest of the stream is relayed.
func (ls *leaseService) keepAliveOnLeader(stream catalogpb.Lease_KeepAliveServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err, ok := ls.renewHere(ctx, req.GetId())
		if !ok {
			reply := make(chan relayReply, 1)
			if err := ls.s.relay.send(req.GetId(), reply); err != nil {
				return toGRPCError(err)
			}
			select {
			case rep := <-reply:
				resp, err = rep.resp, rep.err
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		if err != nil {
			return toGRPCError(err)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// serveKeepAlive serves a follower's relay stream on the leader, and ends it
// as soon as this member stops leading, failing the relay's requests in
// flight so that their clients reconnect.
func (ls *leaseService) serveKeepAlive(stream catalogpb.Lease_KeepAliveServer) error {
	s := ls.s
	ctx := stream.Context()
	// The stream ends as soon as this member stops leading, so that its
	// client moves to the new leader at once rather than at its next
	// renewal; requests are read aside for that.
	changed := s.node.LeaderChanged()
	reqC := make(chan *catalogpb.LeaseKeepAliveRequest, 1)
	errC := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errC <- err
				return
			}
			select {
			case reqC <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqC:
			ttl, err := s.leases.renew(ctx, req.GetId())
			if err != nil {
				return toGRPCError(err)
			}
			resp := &catalogpb.LeaseKeepAliveResponse{Header: s.header(s.sm.Revision()), Id: req.GetId(), TtlSeconds: ttl}
			if err := stream.Send(resp); err != nil {
				return err
			}
		case err := <-errC:
			if err == io.EOF {
				return nil
			}
			return err
		case <-changed:
			if !s.isLeader() {
				return toGRPCError(fmt.Errorf("%w: member %x stopped leading (the leader is %x, 0 if none); reconnect", errNotLeader, s.id, s.node.Leader()))
			}
			changed = s.node.LeaderChanged()
		}
	}
}

// forwardedStreamEnd says how a forwarded keep-alive stream ended.
func forwardedStreamEnd(ctx context.Context, lead uint64, err error) error {
	if err == io.EOF {
		return nil // the client closed, and the leader finished
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if st, ok := status.FromError(err); ok && len(st.Details()) > 0 {
		return err // the leader's own answer (NOT_LEADER, ...)
	}
	if status.Code(err) == codes.Unavailable || status.Code(err) == codes.Canceled {
		return fmt.Errorf("%w: the stream to leader %x broke (%v); reconnect", errNotLeader, lead, err)
	}
	return err
}

func (ls *leaseService) TimeToLive(ctx context.Context, req *catalogpb.LeaseTimeToLiveRequest) (*catalogpb.LeaseTimeToLiveResponse, error) {
	if err := lease.ValidateID(req.GetId()); err != nil {
		return nil, toGRPCError(err)
	}
	s := ls.s
	if !s.isLeader() {
		conn, fctx, _, err := s.leaderConn(ctx)
		if err != nil {
			return nil, toGRPCError(err)
		}
		return catalogpb.NewLeaseClient(conn).TimeToLive(fctx, req)
	}
	resp, err := s.leases.timeToLive(ctx, req)
	return resp, toGRPCError(err)
}

func (ls *leaseService) List(ctx context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error) {
	if req.GetLimit() < 0 || req.GetLimit() > maxLeaseListLimit {
		return nil, toGRPCError(fmt.Errorf("%w: limit must be 0..%d (0 means %d), got %d", lease.ErrInvalidArgument, maxLeaseListLimit, maxLeaseListLimit, req.GetLimit()))
	}
	if req.GetAfter() < 0 {
		return nil, toGRPCError(fmt.Errorf("%w: after must be 0 (from the start) or the last lease id of the previous page, got %d", lease.ErrInvalidArgument, req.GetAfter()))
	}
	s := ls.s
	if !s.isLeader() {
		conn, fctx, _, err := s.leaderConn(ctx)
		if err != nil {
			return nil, toGRPCError(err)
		}
		return catalogpb.NewLeaseClient(conn).List(fctx, req)
	}
	resp, err := s.leases.list(ctx, req)
	return resp, toGRPCError(err)
}

// timeToLive answers on the leader: the lease's remaining time from memory,
// its granted TTL and items from the store.
func (l *leaseManager) timeToLive(ctx context.Context, req *catalogpb.LeaseTimeToLiveRequest) (*catalogpb.LeaseTimeToLiveResponse, error) {
	if err := l.waitPrimary(ctx); err != nil {
		return nil, err
	}
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	resp := &catalogpb.LeaseTimeToLiveResponse{Id: req.GetId()}
	var rev int64
	exists := false
	err := l.s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		info, err := lease.Get(tx, req.GetId())
		if errors.Is(err, lease.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		exists = true
		resp.GrantedTtlSeconds = info.TtlSeconds
		if req.GetItems() {
			resp.Items, err = lease.Items(tx, req.GetId())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if exists {
		left, _, err := l.lessor.Remaining(req.GetId(), time.Now())
		switch {
		case errors.Is(err, lease.ErrNotFound):
			exists = false // revoked since the read
		case err != nil:
			return nil, fmt.Errorf("%w: %v", errNotLeader, err)
		default:
			resp.RemainingMs = ceilDiv(left, time.Millisecond)
			resp.TtlSeconds = ceilDiv(left, time.Second)
		}
	}
	if !exists {
		resp = &catalogpb.LeaseTimeToLiveResponse{Id: req.GetId(), TtlSeconds: -1}
	}
	resp.Header = l.s.header(rev)
	return resp, nil
}

// list answers on the leader: a page of leases in id order, each with its
// remaining time from memory.
func (l *leaseManager) list(ctx context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error) {
	if err := l.waitPrimary(ctx); err != nil {
		return nil, err
	}
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = maxLeaseListLimit
	}
	resp := &catalogpb.LeaseListResponse{}
	var rev int64
	err := l.s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		infos, more, err := lease.List(tx, req.GetAfter(), limit)
		if err != nil {
			return err
		}
		resp.More = more
		resp.Count = int64(lease.Count(tx))
		now := time.Now()
		for _, info := range infos {
			st := &catalogpb.LeaseStatus{Id: info.Id, TtlSeconds: info.TtlSeconds, GrantRevision: info.GrantRevision, Items: lease.CountItems(tx, info.Id)}
			if left, _, err := l.lessor.Remaining(info.Id, now); err == nil {
				st.RemainingMs = ceilDiv(left, time.Millisecond)
			}
			resp.Leases = append(resp.Leases, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp.Header = l.s.header(rev)
	return resp, nil
}

func ceilDiv(d, unit time.Duration) int64 {
	return int64((d + unit - 1) / unit)
}

func isForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// leaderConn returns a connection to the leader's client address and the
// context to call it with (marked as forwarded, so it is never forwarded
// again), when this member is not the leader.
func (s *Server) leaderConn(ctx context.Context) (*grpc.ClientConn, context.Context, uint64, error) {
	if isForwarded(ctx) {
		return nil, nil, 0, fmt.Errorf("%w: this member was asked as the leader but is not (leadership moved)", consensus.ErrNoLeader)
	}
	lead := s.node.Leader()
	if lead == 0 {
		return nil, nil, 0, consensus.ErrNoLeader
	}
	members, err := s.sm.members()
	if err != nil {
		return nil, nil, 0, err
	}
	for _, m := range members {
		if m.ID != lead {
			continue
		}
		if m.ClientAddr == "" {
			return nil, nil, 0, fmt.Errorf("%w: leader %x has not published its client address yet", consensus.ErrNoLeader, lead)
		}
		conn, err := s.peerClients.get(m.ClientAddr)
		if err != nil {
			return nil, nil, 0, err
		}
		return conn, metadata.AppendToOutgoingContext(ctx, forwardedKey, "1"), lead, nil
	}
	return nil, nil, 0, fmt.Errorf("%w: leader %x is not in the member list", consensus.ErrNoLeader, lead)
}
