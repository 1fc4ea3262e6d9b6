package server

import (
	"context"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// The registry, lease and coordination reads of the HTTP surface go through the gRPC
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

func (b httpBackend) ListLocks(ctx context.Context, req *catalogpb.ListLocksRequest) (*catalogpb.ListLocksResponse, error) {
	return (&lockService{s: b.s}).List(ctx, req)
}

func (b httpBackend) GetLock(ctx context.Context, req *catalogpb.GetLockRequest) (*catalogpb.GetLockResponse, error) {
	return (&lockService{s: b.s}).Get(ctx, req)
}

func (b httpBackend) ListBarriers(ctx context.Context, req *catalogpb.ListBarriersRequest) (*catalogpb.ListBarriersResponse, error) {
	return (&barrierService{s: b.s}).List(ctx, req)
}

func (b httpBackend) ListQueues(ctx context.Context, req *catalogpb.ListQueuesRequest) (*catalogpb.ListQueuesResponse, error) {
	return (&queueService{s: b.s}).List(ctx, req)
}

func (b httpBackend) QueueStatus(ctx context.Context, req *catalogpb.QueueStatusRequest) (*catalogpb.QueueStatusResponse, error) {
	return (&queueService{s: b.s}).Status(ctx, req)
}
