package server

import (
	"context"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// The registry and lease reads of the HTTP surface go through the gRPC
// service implementations, so GraphQL answers exactly as the RPCs do
// (validation, consistency, forwarding to the leader, errors as statuses).

func (b httpBackend) ListServices(ctx context.Context, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	return (&registryService{s: b.s}).ListServices(ctx, req)
}

func (b httpBackend) GetService(ctx context.Context, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	return (&registryService{s: b.s}).getServiceDecoded(ctx, req)
}

func (b httpBackend) GetInstance(ctx context.Context, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error) {
	return (&registryService{s: b.s}).GetInstance(ctx, req)
}

func (b httpBackend) GetShardMap(ctx context.Context, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error) {
	return (&registryService{s: b.s}).GetShardMap(ctx, req)
}

func (b httpBackend) LeaseList(ctx context.Context, req *catalogpb.LeaseListRequest) (*catalogpb.LeaseListResponse, error) {
	return (&leaseService{s: b.s}).List(ctx, req)
}
