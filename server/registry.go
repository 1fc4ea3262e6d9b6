package server

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

// registryService implements catalogpb.RegistryServer: validate, propose or
// read, map errors.
type registryService struct {
	catalogpb.UnimplementedRegistryServer
	s *Server
}

// applyRegistryCommand applies one registry command at revision rev.
func applyRegistryCommand(tx *bbolt.Tx, rev int64, cmd *catalogpb.Command) (proto.Message, []*catalogpb.Event, error) {
	switch op := cmd.Op.(type) {
	case *catalogpb.Command_PutService:
		resp, evs, err := registry.ApplyPutService(tx, rev, op.PutService)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_DeleteService:
		resp, evs, err := registry.ApplyDeleteService(tx, rev, op.DeleteService)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_Register:
		resp, evs, err := registry.ApplyRegister(tx, rev, cmd.NowUnixNano, op.Register)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_Deregister:
		resp, evs, err := registry.ApplyDeregister(tx, rev, op.Deregister)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_SetState:
		resp, evs, err := registry.ApplySetState(tx, rev, op.SetState)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_SetHealth:
		resp, evs, err := registry.ApplySetHealth(tx, rev, cmd.NowUnixNano, op.SetHealth)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_SetShardMap:
		resp, evs, err := registry.ApplySetShardMap(tx, rev, op.SetShardMap)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	}
	return nil, nil, fmt.Errorf("%w: command %T is not a registry command", registry.ErrInvalidArgument, cmd.Op)
}

// A headered response is every registry response: the handler replaces the
// header apply wrote with who answered.
type headered interface {
	proto.Message
	GetHeader() *catalogpb.ResponseHeader
}

// proposeRegistry validates nothing: the handler did. It proposes cmd and
// returns the applied response with this member's header.
func proposeRegistry[R headered](ctx context.Context, s *Server, cmd *catalogpb.Command, setHeader func(R, *catalogpb.ResponseHeader)) (R, error) {
	var zero R
	v, err := s.propose(ctx, cmd)
	if err != nil {
		return zero, toGRPCError(err)
	}
	resp, ok := v.(R)
	if !ok {
		return zero, toGRPCError(fmt.Errorf("server: apply returned %T for %T", v, cmd.Op))
	}
	setHeader(resp, s.header(resp.GetHeader().GetRevision()))
	return resp, nil
}

func (r *registryService) PutService(ctx context.Context, req *catalogpb.PutServiceRequest) (*catalogpb.PutServiceResponse, error) {
	if err := registry.ValidatePutService(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_PutService{PutService: req}},
		func(resp *catalogpb.PutServiceResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) DeleteService(ctx context.Context, req *catalogpb.DeleteServiceRequest) (*catalogpb.DeleteServiceResponse, error) {
	if err := registry.ValidateDeleteService(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_DeleteService{DeleteService: req}},
		func(resp *catalogpb.DeleteServiceResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

// Register records the instance with this server's data center.
func (r *registryService) Register(ctx context.Context, req *catalogpb.RegisterRequest) (*catalogpb.RegisterResponse, error) {
	if err := registry.ValidateRegister(req); err != nil {
		return nil, toGRPCError(err)
	}
	cmd := &catalogpb.RegisterCommand{Instance: req.Instance, Dc: r.s.cfg.DC}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_Register{Register: cmd}},
		func(resp *catalogpb.RegisterResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) Deregister(ctx context.Context, req *catalogpb.DeregisterRequest) (*catalogpb.DeregisterResponse, error) {
	if err := registry.ValidateDeregister(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_Deregister{Deregister: req}},
		func(resp *catalogpb.DeregisterResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) SetState(ctx context.Context, req *catalogpb.SetStateRequest) (*catalogpb.SetStateResponse, error) {
	if err := registry.ValidateSetState(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_SetState{SetState: req}},
		func(resp *catalogpb.SetStateResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) SetHealth(ctx context.Context, req *catalogpb.SetHealthRequest) (*catalogpb.SetHealthResponse, error) {
	if err := registry.ValidateSetHealth(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_SetHealth{SetHealth: req}},
		func(resp *catalogpb.SetHealthResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) SetShardMap(ctx context.Context, req *catalogpb.SetShardMapRequest) (*catalogpb.SetShardMapResponse, error) {
	if err := checkRequestSize(req); err != nil {
		return nil, toGRPCError(err)
	}
	if err := registry.ValidateSetShardMap(req); err != nil {
		return nil, toGRPCError(err)
	}
	return proposeRegistry(ctx, r.s, &catalogpb.Command{Op: &catalogpb.Command_SetShardMap{SetShardMap: req}},
		func(resp *catalogpb.SetShardMapResponse, h *catalogpb.ResponseHeader) { resp.Header = h })
}

func (r *registryService) ListServices(ctx context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	if err := registry.ValidateListServices(req); err != nil {
		return nil, toGRPCError(err)
	}
	var resp *catalogpb.ListServicesResponse
	rev, _, err := r.s.read(ctx, req.Consistency, func(tx *bbolt.Tx) (err error) {
		resp, err = registry.ListServices(tx, req)
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = r.s.header(rev)
	return resp, nil
}

// GetService sends the instances as stored, without decoding them
// (registry.GetServiceEncoded).
func (r *registryService) GetService(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	resp, err := r.getService(ctx, req, registry.GetServiceEncoded)
	return resp, toGRPCError(err)
}

// getServiceDecoded answers as GetService with the instances decoded, for
// callers in this process.
func (r *registryService) getServiceDecoded(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	resp, err := r.getService(ctx, req, registry.GetService)
	return resp, toGRPCError(err)
}

func (r *registryService) getService(ctx context.Context, req *catalogpb.GetServiceRequest,
	read func(*bbolt.Tx, *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error)) (*catalogpb.GetServiceResponse, error) {
	if err := registry.ValidateGetService(req); err != nil {
		return nil, err
	}
	var resp *catalogpb.GetServiceResponse
	rev, staleBy, err := r.s.read(ctx, req.Consistency, func(tx *bbolt.Tx) (err error) {
		resp, err = read(tx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Header = r.s.header(rev)
	resp.StaleByIndex = staleBy
	return resp, nil
}

func (r *registryService) GetInstance(ctx context.Context, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error) {
	if err := registry.ValidateGetInstance(req); err != nil {
		return nil, toGRPCError(err)
	}
	var resp *catalogpb.GetInstanceResponse
	rev, _, err := r.s.read(ctx, req.Consistency, func(tx *bbolt.Tx) (err error) {
		resp, err = registry.GetInstance(tx, req)
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = r.s.header(rev)
	return resp, nil
}

func (r *registryService) GetShardMap(ctx context.Context, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error) {
	if err := registry.ValidateGetShardMap(req); err != nil {
		return nil, toGRPCError(err)
	}
	var resp *catalogpb.GetShardMapResponse
	rev, _, err := r.s.read(ctx, req.Consistency, func(tx *bbolt.Tx) (err error) {
		resp, err = registry.GetShardMap(tx, req)
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = r.s.header(rev)
	return resp, nil
}
