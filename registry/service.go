package registry

import (
	"bytes"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
)

// Buckets of the service registry:
//   - services: name → marshalled catalogpb.Service;
//   - instances: service, a zero byte, id → marshalled catalogpb.Instance, so
//     a service's instances are one prefix scan, in id order;
//   - shard_maps: service → marshalled catalogpb.KeyValue whose value is the
//     marshalled catalogpb.ShardMap (the envelope keeps the map's create
//     revision, which ShardMap has no field for).
var (
	ServicesBucket  = []byte("services")
	InstancesBucket = []byte("instances")
	ShardMapsBucket = []byte("shard_maps")
)

// marshal is how the registry stores its protobufs: deterministically, so
// every member writes the same bytes for maps.
var marshal = proto.MarshalOptions{Deterministic: true}

func bucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	if b := tx.Bucket(name); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("registry: bucket %q does not exist; call CreateBuckets when the database is opened", name)
}

// registryBuckets returns the three registry buckets.
func registryBuckets(tx *bbolt.Tx) (services, instances, shardMaps *bbolt.Bucket, err error) {
	if services, err = bucket(tx, ServicesBucket); err != nil {
		return
	}
	if instances, err = bucket(tx, InstancesBucket); err != nil {
		return
	}
	shardMaps, err = bucket(tx, ShardMapsBucket)
	return
}

func putProto(b *bbolt.Bucket, key []byte, m proto.Message) error {
	raw, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("registry: encode %T %s: %w", m, quoteKey(key), err)
	}
	if err := b.Put(key, raw); err != nil {
		return fmt.Errorf("registry: store %T %s: %w", m, quoteKey(key), err)
	}
	return nil
}

// getProto reads key into m; found is false when key does not exist.
func getProto(b *bbolt.Bucket, key []byte, m proto.Message) (found bool, err error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := proto.Unmarshal(raw, m); err != nil {
		return true, fmt.Errorf("registry: stored %T %s is corrupt: %w", m, quoteKey(key), err)
	}
	return true, nil
}

func getService(b *bbolt.Bucket, name string) (*catalogpb.Service, error) {
	svc := &catalogpb.Service{}
	found, err := getProto(b, []byte(name), svc)
	if err != nil || !found {
		return nil, err
	}
	return svc, nil
}

func serviceNotFound(name string) error {
	return fmt.Errorf("%w: service %s does not exist", ErrServiceNotFound, quote(name))
}

// kvOf is the logical key and revisions an event carries for a registry item.
func kvOf(key string, createRev, modRev, version int64) *catalogpb.KeyValue {
	return &catalogpb.KeyValue{Key: []byte(key), CreateRevision: createRev, ModRevision: modRev, Version: version}
}

func servicePutEvent(svc, prev *catalogpb.Service) *catalogpb.Event {
	ev := &catalogpb.Event{
		Type:    catalogpb.Event_PUT,
		Kind:    ServiceKind,
		Kv:      kvOf(svc.Name, svc.CreateRevision, svc.ModRevision, 0),
		Service: svc,
	}
	if prev != nil {
		ev.PrevKv = kvOf(prev.Name, prev.CreateRevision, prev.ModRevision, 0)
		ev.PrevService = prev
	}
	return ev
}

func serviceDeleteEvent(rev int64, prev *catalogpb.Service) *catalogpb.Event {
	return &catalogpb.Event{
		Type:        catalogpb.Event_DELETE,
		Kind:        ServiceKind,
		Kv:          kvOf(prev.Name, 0, rev, 0),
		PrevKv:      kvOf(prev.Name, prev.CreateRevision, prev.ModRevision, 0),
		PrevService: prev,
	}
}

// sameService reports whether a and b differ only in their revisions.
func sameService(a, b *catalogpb.Service) bool {
	a2, b2 := proto.CloneOf(a), proto.CloneOf(b)
	a2.CreateRevision, a2.ModRevision = 0, 0
	b2.CreateRevision, b2.ModRevision = 0, 0
	return proto.Equal(a2, b2)
}

// ApplyPutService creates a service or replaces its description, tags,
// metadata and owner (create_revision is kept). A put that changes nothing
// returns the stored service and no events.
func ApplyPutService(tx *bbolt.Tx, rev int64, req *catalogpb.PutServiceRequest) (*catalogpb.PutServiceResponse, []*catalogpb.Event, error) {
	if err := ValidatePutService(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	sb, err := bucket(tx, ServicesBucket)
	if err != nil {
		return nil, nil, err
	}
	old, err := getService(sb, req.Service.Name)
	if err != nil {
		return nil, nil, err
	}
	svc := proto.CloneOf(req.Service)
	svc.CreateRevision, svc.ModRevision = rev, rev
	if old != nil {
		if sameService(old, svc) {
			return &catalogpb.PutServiceResponse{Service: old}, nil, nil
		}
		svc.CreateRevision = old.CreateRevision
	}
	if err := putProto(sb, []byte(svc.Name), svc); err != nil {
		return nil, nil, err
	}
	return &catalogpb.PutServiceResponse{Service: svc}, []*catalogpb.Event{servicePutEvent(svc, old)}, nil
}

// ApplyDeleteService deletes a service. A service that still has instances
// is refused with ErrServiceNotEmpty unless req.Force: then its instances
// (detached from their leases) and its shard map go with it, each with its
// event, all at rev. An unknown service is ErrServiceNotFound.
func ApplyDeleteService(tx *bbolt.Tx, rev int64, req *catalogpb.DeleteServiceRequest) (*catalogpb.DeleteServiceResponse, []*catalogpb.Event, error) {
	if err := ValidateDeleteService(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	if err := checkLeases(tx); err != nil {
		return nil, nil, err
	}
	sb, ib, mb, err := registryBuckets(tx)
	if err != nil {
		return nil, nil, err
	}
	svc, err := getService(sb, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if svc == nil {
		return nil, nil, serviceNotFound(req.Name)
	}
	var instances []*catalogpb.Instance
	err = forEachInstanceOf(ib, req.Name, func(_ []byte, inst *catalogpb.Instance) error {
		instances = append(instances, inst)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(instances) > 0 && !req.Force {
		return nil, nil, fmt.Errorf("%w: service %s still has %d instances; deregister them first, or delete with force to delete them too",
			ErrServiceNotEmpty, quote(req.Name), len(instances))
	}
	var events []*catalogpb.Event
	for _, inst := range instances {
		if err := lease.Detach(tx, inst.Lease, InstanceKind, InstanceKey(inst.Service, inst.Id)); err != nil {
			return nil, nil, err
		}
		if err := ib.Delete(instanceKey(inst.Service, inst.Id)); err != nil {
			return nil, nil, fmt.Errorf("registry: delete instance %s: %w", quote(InstanceKey(inst.Service, inst.Id)), err)
		}
		events = append(events, instanceDeleteEvent(rev, inst))
	}
	m, createRev, err := getShardMap(mb, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if m != nil {
		if err := mb.Delete([]byte(req.Name)); err != nil {
			return nil, nil, fmt.Errorf("registry: delete shard map of %s: %w", quote(req.Name), err)
		}
		events = append(events, shardMapDeleteEvent(rev, m, createRev))
	}
	if err := sb.Delete([]byte(req.Name)); err != nil {
		return nil, nil, fmt.Errorf("registry: delete service %s: %w", quote(req.Name), err)
	}
	events = append(events, serviceDeleteEvent(rev, svc))
	return &catalogpb.DeleteServiceResponse{DeletedInstances: int64(len(instances))}, events, nil
}

// GetServiceRecord returns the stored service, or an error wrapping
// ErrServiceNotFound.
func GetServiceRecord(tx *bbolt.Tx, name string) (*catalogpb.Service, error) {
	sb, err := bucket(tx, ServicesBucket)
	if err != nil {
		return nil, err
	}
	svc, err := getService(sb, name)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, serviceNotFound(name)
	}
	return svc, nil
}

// ListServices returns services in name order after req.After, at most
// req.Limit of them (0: DefaultListServicesLimit), each with its instance
// counts; with req.Tag only services carrying that tag. The request's
// consistency is the server's business and is ignored here.
func ListServices(tx *bbolt.Tx, req *catalogpb.ListServicesRequest) (*catalogpb.ListServicesResponse, error) {
	if err := ValidateListServices(req); err != nil {
		return nil, err
	}
	sb, ib, _, err := registryBuckets(tx)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultListServicesLimit
	}
	resp := &catalogpb.ListServicesResponse{}
	c := sb.Cursor()
	k, v := c.Seek([]byte(req.After))
	if k != nil && req.After != "" && bytes.Equal(k, []byte(req.After)) {
		k, v = c.Next()
	}
	for ; k != nil; k, v = c.Next() {
		svc := &catalogpb.Service{}
		if err := proto.Unmarshal(v, svc); err != nil {
			return nil, fmt.Errorf("registry: stored service %s is corrupt: %w", quoteKey(k), err)
		}
		if req.Tag != "" && !slices.Contains(svc.Tags, req.Tag) {
			continue
		}
		if int64(len(resp.Services)) == limit {
			resp.More = true
			break
		}
		sum := &catalogpb.ServiceSummary{Service: svc}
		err := forEachInstanceOf(ib, svc.Name, func(_ []byte, inst *catalogpb.Instance) error {
			sum.Instances++
			switch inst.Health {
			case catalogpb.HealthStatus_PASSING:
				sum.Passing++
			case catalogpb.HealthStatus_WARNING:
				sum.Warning++
			case catalogpb.HealthStatus_CRITICAL:
				sum.Critical++
			}
			if inst.State == catalogpb.InstanceState_STATE_SERVING {
				sum.Serving++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		resp.Services = append(resp.Services, sum)
	}
	return resp, nil
}
