package server

import (
	"bytes"
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

// electionService implements catalogpb.ElectionServer. An election is a
// lock name of kind ELECTION: its holder is the leader.
type electionService struct {
	catalogpb.UnimplementedElectionServer
	s *Server
}

func (e *electionService) Campaign(ctx context.Context, req *catalogpb.CampaignRequest) (*catalogpb.CampaignResponse, error) {
	if err := locks.ValidateCampaignRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	acq := locks.CampaignCommand(req, req.GetWaiterId()).GetAcquire()
	resp, err := e.s.acquire(ctx, "election", acq)
	if err != nil {
		return nil, err
	}
	out := &catalogpb.CampaignResponse{Header: resp.Header, Leader: &catalogpb.LeaderKey{Name: req.Name, Lease: req.Lease, Token: resp.Token}}
	for _, h := range resp.GetState().GetHolders() {
		if h.GetToken() == resp.Token {
			out.Leader.Revision = h.GetRevision()
			out.Value = h.GetValue()
		}
	}
	return out, nil
}

func (e *electionService) Proclaim(ctx context.Context, req *catalogpb.ProclaimRequest) (*catalogpb.ProclaimResponse, error) {
	if err := locks.ValidateProclaimRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.ProclaimResponse](ctx, e.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Proclaim{Proclaim: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = e.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (e *electionService) Resign(ctx context.Context, req *catalogpb.ResignRequest) (*catalogpb.ResignResponse, error) {
	if err := locks.ValidateResignRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.UnlockResponse](ctx, e.s, locks.ResignCommand(req))
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.ResignResponse{Header: e.s.header(resp.Header.GetRevision())}, nil
}

// electionOf checks that st (nil: absent) is an election.
func electionOf(name string, st *catalogpb.LockState) error {
	if st != nil && st.GetKind() != catalogpb.LockKind_LOCK_KIND_ELECTION {
		return fmt.Errorf("%w: %q is a %s, not an election", locks.ErrKindMismatch, name, st.GetKind())
	}
	return nil
}

func (e *electionService) Leader(ctx context.Context, req *catalogpb.LeaderRequest) (*catalogpb.LeaderResponse, error) {
	if err := locks.ValidateName("election", req.GetName()); err != nil {
		return nil, toGRPCError(err)
	}
	var st *catalogpb.LockState
	rev, _, err := e.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		st, err = locks.GetLock(tx, req.GetName())
		return err
	})
	if err == nil {
		err = electionOf(req.GetName(), st)
	}
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := locks.LeaderOf(st)
	resp.Header = e.s.header(rev)
	return resp, nil
}

// sameLeadership reports whether two answers name the same leader with the
// same token and value (the candidates waiting do not count).
func sameLeadership(a, b *catalogpb.LeaderResponse) bool {
	return a.GetHasLeader() == b.GetHasLeader() &&
		a.GetLeader().GetLease() == b.GetLeader().GetLease() &&
		a.GetLeader().GetToken() == b.GetLeader().GetToken() &&
		bytes.Equal(a.GetValue(), b.GetValue())
}

// Observe sends the leadership as read, then one answer per change of the
// leader, its token or its value, in revision order, from the election's
// events. Should this member fall behind by more than
// maxSubscriberRevisions changes of the election, it sends the leadership
// as the store holds it then, skipping the changes in between.
func (e *electionService) Observe(req *catalogpb.LeaderRequest, stream catalogpb.Election_ObserveServer) error {
	s := e.s
	name := req.GetName()
	if err := locks.ValidateName("election", name); err != nil {
		return toGRPCError(err)
	}
	ctx := stream.Context()
	sub := s.coord.subscribe(locks.LockKind, name)
	defer sub.close()
	var st *catalogpb.LockState
	rev, _, err := s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		st, err = locks.GetLock(tx, name)
		return err
	})
	if err == nil {
		err = electionOf(name, st)
	}
	if err != nil {
		return toGRPCError(err)
	}
	last := locks.LeaderOf(st)
	last.Header = s.header(rev)
	if err := stream.Send(last); err != nil {
		return err
	}
	send := func(rev int64, st *catalogpb.LockState) (bool, error) {
		if err := electionOf(name, st); err != nil {
			return true, err
		}
		cur := locks.LeaderOf(st)
		if sameLeadership(last, cur) {
			return false, nil
		}
		cur.Header = s.header(rev)
		if err := stream.Send(cur); err != nil {
			return true, err
		}
		last = cur
		return false, nil
	}
	err = s.follow(ctx, sub, rev,
		func(rev int64, evs []*catalogpb.Event) (bool, error) {
			return send(rev, evs[len(evs)-1].GetLock())
		},
		func() (int64, bool, error) {
			st, rev, err := s.readLock(name)
			if err != nil {
				return 0, true, err
			}
			done, err := send(rev, st)
			return rev, done, err
		})
	return toGRPCError(err)
}
