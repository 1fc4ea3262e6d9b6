package sdk

import (
	"context"
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// The raw Registry calls. Writes are retried only when the cluster had no
// leader (the write was then not proposed); reads are retried while servers
// are unavailable. The servers validate every field and answer
// InvalidArgument naming it; these calls only refuse what cannot be sent.

func (c *Client) registryClient() catalogpb.RegistryClient {
	return catalogpb.NewRegistryClient(c.conn)
}

// PutService creates or updates a service's record: description, tags,
// metadata and owner. Instances are not touched.
func (c *Client) PutService(ctx context.Context, svc *catalogpb.Service) (*catalogpb.PutServiceResponse, error) {
	if svc == nil {
		return nil, fmt.Errorf("%w: PutService: service is nil", ErrInvalidArgument)
	}
	req := &catalogpb.PutServiceRequest{Service: svc}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.PutServiceResponse, error) {
		return c.registryClient().PutService(ctx, req)
	})
}

// DeleteService deletes a service. Without force a service that still has
// instances is refused with ErrServiceNotEmpty; with force its instances and
// shard map go with it.
func (c *Client) DeleteService(ctx context.Context, name string, force bool) (*catalogpb.DeleteServiceResponse, error) {
	req := &catalogpb.DeleteServiceRequest{Name: name, Force: force}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.DeleteServiceResponse, error) {
		return c.registryClient().DeleteService(ctx, req)
	})
}

// RegisterInstance registers inst, or updates it if its id is already
// registered in its service. inst.Lease, if set, ties the instance to that
// lease. Register is the managed form: it holds a lease and keeps the
// instance registered.
func (c *Client) RegisterInstance(ctx context.Context, inst *catalogpb.Instance) (*catalogpb.RegisterResponse, error) {
	if inst == nil {
		return nil, fmt.Errorf("%w: RegisterInstance: instance is nil", ErrInvalidArgument)
	}
	req := &catalogpb.RegisterRequest{Instance: inst}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.RegisterResponse, error) {
		return c.registryClient().Register(ctx, req)
	})
}

// Deregister removes instance id of service. Removing an instance that does
// not exist is not an error: the response says Deleted false.
func (c *Client) Deregister(ctx context.Context, service, id string) (*catalogpb.DeregisterResponse, error) {
	req := &catalogpb.DeregisterRequest{Service: service, Id: id}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.DeregisterResponse, error) {
		return c.registryClient().Deregister(ctx, req)
	})
}

// SetInstanceState sets the lifecycle state of an instance (STARTING,
// SERVING, DRAINING, STOPPED).
func (c *Client) SetInstanceState(ctx context.Context, service, id string, s catalogpb.InstanceState) (*catalogpb.SetStateResponse, error) {
	req := &catalogpb.SetStateRequest{Service: service, Id: id, State: s}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.SetStateResponse, error) {
		return c.registryClient().SetState(ctx, req)
	})
}

// SetInstanceHealth sets the health of an instance with output, the text a
// reader sees next to it (a check's last answer, a reason).
func (c *Client) SetInstanceHealth(ctx context.Context, service, id string, h catalogpb.HealthStatus, output string) (*catalogpb.SetHealthResponse, error) {
	req := &catalogpb.SetHealthRequest{Service: service, Id: id, Health: h, Output: output}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.SetHealthResponse, error) {
		return c.registryClient().SetHealth(ctx, req)
	})
}

// GetService reads a service and one page of its instances (req.Limit,
// resuming after req.After). Discover reads every page.
func (c *Client) GetService(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: GetService: request is nil", ErrInvalidArgument)
	}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetServiceResponse, error) {
		return c.registryClient().GetService(ctx, req)
	})
}

// GetInstance reads one instance (linearizable).
func (c *Client) GetInstance(ctx context.Context, service, id string) (*catalogpb.GetInstanceResponse, error) {
	req := &catalogpb.GetInstanceRequest{Service: service, Id: id}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetInstanceResponse, error) {
		return c.registryClient().GetInstance(ctx, req)
	})
}

// ListServices lists services with their instance counts, one page per call
// (req.Limit, resuming after req.After). A nil req lists the first page.
func (c *Client) ListServices(ctx context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	if req == nil {
		req = &catalogpb.ListServicesRequest{}
	}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.ListServicesResponse, error) {
		return c.registryClient().ListServices(ctx, req)
	})
}

// GetShardMap reads a service's shard map; a service without one answers an
// empty map of epoch 0.
func (c *Client) GetShardMap(ctx context.Context, service string) (*catalogpb.GetShardMapResponse, error) {
	req := &catalogpb.GetShardMapRequest{Service: service}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetShardMapResponse, error) {
		return c.registryClient().GetShardMap(ctx, req)
	})
}

// SetShardMap replaces a service's shard map if its epoch is still
// expectedEpoch (0: the service has none yet); otherwise it fails with
// ErrEpochMismatch and nothing changes: read the map again and retry.
func (c *Client) SetShardMap(ctx context.Context, m *catalogpb.ShardMap, expectedEpoch int64) (*catalogpb.SetShardMapResponse, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: SetShardMap: map is nil", ErrInvalidArgument)
	}
	req := &catalogpb.SetShardMapRequest{Map: m, ExpectedEpoch: expectedEpoch}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.SetShardMapResponse, error) {
		return c.registryClient().SetShardMap(ctx, req)
	})
}
