package server

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

// kvService implements catalogpb.KVServer: validate, propose or read, map errors.
type kvService struct {
	catalogpb.UnimplementedKVServer
	s *Server
}

// checkRequestSize refuses a transaction larger than registry.MaxRequestSize
// (many ops can add up past it even when each is within its limits).
func checkRequestSize(m proto.Message) error {
	if n := proto.Size(m); n > registry.MaxRequestSize {
		return fmt.Errorf("%w: request must be at most %d bytes, got %d", registry.ErrRequestTooLarge, registry.MaxRequestSize, n)
	}
	return nil
}

// Put needs no request size check: the key and value limits keep a put under
// registry.MaxRequestSize.
func (k *kvService) Put(ctx context.Context, req *catalogpb.PutRequest) (*catalogpb.PutResponse, error) {
	if err := registry.ValidatePut(req); err != nil {
		return nil, toGRPCError(err)
	}
	v, err := k.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_Put{Put: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := v.(*catalogpb.PutResponse)
	resp.Header = k.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (k *kvService) Delete(ctx context.Context, req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, error) {
	if err := registry.ValidateDelete(req); err != nil {
		return nil, toGRPCError(err)
	}
	v, err := k.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_Delete{Delete: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := v.(*catalogpb.DeleteResponse)
	resp.Header = k.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (k *kvService) Txn(ctx context.Context, req *catalogpb.TxnRequest) (*catalogpb.TxnResponse, error) {
	if err := checkRequestSize(req); err != nil {
		return nil, toGRPCError(err)
	}
	if err := registry.ValidateTxn(req); err != nil {
		return nil, toGRPCError(err)
	}
	for i, c := range req.Compare {
		if c.Target == catalogpb.Compare_FENCE {
			if err := locks.ValidateName("lock", string(c.Key)); err != nil {
				return nil, toGRPCError(fmt.Errorf("txn compare %d: key of a FENCE compare: %w", i, err))
			}
		}
	}
	v, err := k.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_Txn{Txn: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := v.(*catalogpb.TxnResponse)
	resp.Header = k.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (k *kvService) Get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	resp, err := k.s.get(ctx, req)
	return resp, toGRPCError(err)
}

// get serves a read: linearizable unless the request asks for serializable.
func (s *Server) get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	if err := registry.ValidateGet(req); err != nil {
		return nil, err
	}
	var resp *catalogpb.GetResponse
	rev, staleBy, err := s.read(ctx, req.Consistency, func(tx *bbolt.Tx) (err error) {
		resp, err = registry.Range(tx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Header = s.header(rev)
	resp.StaleByIndex = staleBy
	return resp, nil
}
