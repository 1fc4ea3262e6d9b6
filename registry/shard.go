package registry

import (
	"fmt"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// getShardMap reads a service's shard map and the revision that created it;
// m is nil when the service has none.
func getShardMap(b *bbolt.Bucket, service string) (m *catalogpb.ShardMap, createRev int64, err error) {
	env := &catalogpb.KeyValue{}
	found, err := getProto(b, []byte(service), env)
	if err != nil || !found {
		return nil, 0, err
	}
	m = &catalogpb.ShardMap{}
	if err := proto.Unmarshal(env.Value, m); err != nil {
		return nil, 0, fmt.Errorf("registry: stored shard map of %s is corrupt: %w", quote(service), err)
	}
	return m, env.CreateRevision, nil
}

func putShardMap(b *bbolt.Bucket, m *catalogpb.ShardMap, createRev int64) error {
	raw, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("registry: encode shard map of %s: %w", quote(m.Service), err)
	}
	env := &catalogpb.KeyValue{Key: []byte(m.Service), Value: raw, CreateRevision: createRev, ModRevision: m.ModRevision, Version: m.Epoch}
	return putProto(b, env.Key, env)
}

func shardMapDeleteEvent(rev int64, prev *catalogpb.ShardMap, createRev int64) *catalogpb.Event {
	return &catalogpb.Event{
		Type:         catalogpb.Event_DELETE,
		Kind:         ShardMapKind,
		Kv:           kvOf(prev.Service, 0, rev, 0),
		PrevKv:       kvOf(prev.Service, createRev, prev.ModRevision, prev.Epoch),
		PrevShardMap: prev,
	}
}

// ApplySetShardMap replaces a service's shard map if its epoch is still
// req.ExpectedEpoch (0: the service has no map yet), and otherwise refuses
// with ErrEpochMismatch. The stored map gets epoch old+1 and mod_revision
// rev. The service must exist (ErrServiceNotFound). Replicas are not checked
// against the registered instances: instances come and go with their leases,
// and a map may name one that is down.
func ApplySetShardMap(tx *bbolt.Tx, rev int64, req *catalogpb.SetShardMapRequest) (*catalogpb.SetShardMapResponse, []*catalogpb.Event, error) {
	if err := ValidateSetShardMap(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	sb, _, mb, err := registryBuckets(tx)
	if err != nil {
		return nil, nil, err
	}
	service := req.Map.Service
	if sb.Get([]byte(service)) == nil {
		return nil, nil, serviceNotFound(service)
	}
	old, createRev, err := getShardMap(mb, service)
	if err != nil {
		return nil, nil, err
	}
	var epoch int64
	if old != nil {
		epoch = old.Epoch
	}
	if req.ExpectedEpoch != epoch {
		return nil, nil, fmt.Errorf("%w: shard map of service %s is at epoch %d, but expected_epoch is %d; read the map again and retry with its epoch",
			ErrEpochMismatch, quote(service), epoch, req.ExpectedEpoch)
	}
	m := proto.CloneOf(req.Map)
	m.Epoch, m.ModRevision = epoch+1, rev
	if old == nil {
		createRev = rev
	}
	if err := putShardMap(mb, m, createRev); err != nil {
		return nil, nil, err
	}
	ev := &catalogpb.Event{
		Type:     catalogpb.Event_PUT,
		Kind:     ShardMapKind,
		Kv:       kvOf(service, createRev, rev, m.Epoch),
		ShardMap: m,
	}
	if old != nil {
		ev.PrevKv = kvOf(service, createRev, old.ModRevision, old.Epoch)
		ev.PrevShardMap = old
	}
	return &catalogpb.SetShardMapResponse{Map: m}, []*catalogpb.Event{ev}, nil
}

// GetShardMap returns a service's shard map: an empty map (epoch 0) when the
// service has none, ErrServiceNotFound when the service does not exist. The
// request's consistency is the server's business and is ignored here.
func GetShardMap(tx *bbolt.Tx, req *catalogpb.GetShardMapRequest) (*catalogpb.GetShardMapResponse, error) {
	if err := ValidateGetShardMap(req); err != nil {
		return nil, err
	}
	sb, _, mb, err := registryBuckets(tx)
	if err != nil {
		return nil, err
	}
	if sb.Get([]byte(req.Service)) == nil {
		return nil, serviceNotFound(req.Service)
	}
	m, _, err := getShardMap(mb, req.Service)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = &catalogpb.ShardMap{Service: req.Service}
	}
	return &catalogpb.GetShardMapResponse{Map: m}, nil
}
