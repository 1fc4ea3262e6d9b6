package registry_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/registry"
)

// A regStore drives the registry as the state machine does: one bbolt
// transaction per command, the revision moving iff the command returned
// events, and time entering as a number.
type regStore struct {
	t   *testing.T
	db  *bbolt.DB
	rev int64
	now int64
}

func newRegStore(t *testing.T) *regStore {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "registry.db"), 0o600, &bbolt.Options{NoSync: true, NoFreelistSync: true})
	if err != nil {
		t.Fatalf("open bbolt: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := registry.CreateBuckets(tx); err != nil {
			return err
		}
		return lease.CreateBuckets(tx)
	})
	if err != nil {
		t.Fatalf("create buckets: %v", err)
	}
	return &regStore{t: t, db: db, now: 1_000_000_000}
}

// apply runs one command; a refused command rolls its transaction back, as
// the server would (though a refused Apply must not have written anything:
// see unchanged).
func (s *regStore) apply(fn func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error)) ([]*catalogpb.Event, error) {
	s.t.Helper()
	var events []*catalogpb.Event
	var applyErr error
	err := s.db.Update(func(tx *bbolt.Tx) error {
		events, applyErr = fn(tx, s.rev+1)
		return nil // commit even on error: a refused command must have written nothing
	})
	if err != nil {
		s.t.Fatalf("bbolt update: %v", err)
	}
	if applyErr == nil && len(events) > 0 {
		s.rev++
	}
	for _, ev := range events {
		if ev.Kv.GetModRevision() != s.rev {
			s.t.Errorf("event %s %s carries mod revision %d, want %d", ev.Kind, ev.Kv.GetKey(), ev.Kv.GetModRevision(), s.rev)
		}
	}
	return events, applyErr
}

func (s *regStore) view(fn func(tx *bbolt.Tx) error) {
	s.t.Helper()
	if err := s.db.View(fn); err != nil {
		s.t.Fatal(err)
	}
}

func (s *regStore) putService(svc *catalogpb.Service) (*catalogpb.PutServiceResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.PutServiceResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplyPutService(tx, rev, &catalogpb.PutServiceRequest{Service: svc})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) deleteService(name string, force bool) (*catalogpb.DeleteServiceResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.DeleteServiceResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplyDeleteService(tx, rev, &catalogpb.DeleteServiceRequest{Name: name, Force: force})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) register(inst *catalogpb.Instance) (*catalogpb.RegisterResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.RegisterResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplyRegister(tx, rev, s.now, &catalogpb.RegisterCommand{Instance: inst, Dc: "dc1"})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) mustRegister(inst *catalogpb.Instance) *catalogpb.Instance {
	s.t.Helper()
	resp, _, err := s.register(inst)
	if err != nil {
		s.t.Fatalf("register %s/%s: %v", inst.Service, inst.Id, err)
	}
	return resp.Instance
}

func (s *regStore) deregister(service, id string) (*catalogpb.DeregisterResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.DeregisterResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplyDeregister(tx, rev, &catalogpb.DeregisterRequest{Service: service, Id: id})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) setState(service, id string, st catalogpb.InstanceState) (*catalogpb.SetStateResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.SetStateResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplySetState(tx, rev, &catalogpb.SetStateRequest{Service: service, Id: id, State: st})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) setHealth(req *catalogpb.SetHealthRequest) (*catalogpb.SetHealthResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.SetHealthResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplySetHealth(tx, rev, s.now, req)
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) setShardMap(m *catalogpb.ShardMap, expected int64) (*catalogpb.SetShardMapResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.SetShardMapResponse
	evs, err := s.apply(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = registry.ApplySetShardMap(tx, rev, &catalogpb.SetShardMapRequest{Map: m, ExpectedEpoch: expected})
		return evs, err
	})
	return resp, evs, err
}

func (s *regStore) grant(id int64) {
	s.t.Helper()
	_, err := s.apply(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		_, evs, err := lease.ApplyGrant(tx, rev, s.now, &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: 10})
		return evs, err
	})
	if err != nil {
		s.t.Fatalf("grant lease %d: %v", id, err)
	}
}

func (s *regStore) leaseItems(id int64) []string {
	s.t.Helper()
	var out []string
	s.view(func(tx *bbolt.Tx) error {
		items, err := lease.Items(tx, id)
		for _, it := range items {
			out = append(out, it.Kind+":"+it.Key)
		}
		return err
	})
	return out
}

func (s *regStore) getInstance(service, id string) (*catalogpb.Instance, error) {
	var inst *catalogpb.Instance
	var err error
	s.view(func(tx *bbolt.Tx) error {
		var resp *catalogpb.GetInstanceResponse
		resp, err = registry.GetInstance(tx, &catalogpb.GetInstanceRequest{Service: service, Id: id})
		if err == nil {
			inst = resp.Instance
		}
		return nil
	})
	return inst, err
}

// getService reads through GetService, and checks that GetServiceEncoded
// sends the same response: every GetService test also tests the encoded path.
func (s *regStore) getService(req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	s.t.Helper()
	var resp, enc *catalogpb.GetServiceResponse
	var err, encErr error
	s.view(func(tx *bbolt.Tx) error {
		resp, err = registry.GetService(tx, req)
		enc, encErr = registry.GetServiceEncoded(tx, req)
		return nil
	})
	if (err == nil) != (encErr == nil) || err != nil && err.Error() != encErr.Error() {
		s.t.Fatalf("GetService error %v, GetServiceEncoded error %v: want the same", err, encErr)
	}
	if err == nil {
		if len(enc.Instances) != 0 {
			s.t.Fatalf("GetServiceEncoded decoded %d instances; want them in the unknown fields only", len(enc.Instances))
		}
		wire, merr := proto.Marshal(enc)
		if merr != nil {
			s.t.Fatalf("marshal encoded response: %v", merr)
		}
		received := &catalogpb.GetServiceResponse{}
		if uerr := proto.Unmarshal(wire, received); uerr != nil {
			s.t.Fatalf("unmarshal encoded response: %v", uerr)
		}
		if !proto.Equal(received, resp) {
			s.t.Fatalf("GetServiceEncoded as received:\n%v\nGetService:\n%v", received, resp)
		}
	}
	return resp, err
}

// dump returns every key and value of every bucket, to prove a refused
// command changed nothing.
func (s *regStore) dump() map[string]string {
	s.t.Helper()
	out := map[string]string{}
	s.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"|"+string(k)] = string(v)
				return nil
			})
		})
	})
	return out
}

// unchanged fails the test when the store differs from before.
func (s *regStore) unchanged(before map[string]string, rev int64) {
	s.t.Helper()
	after := s.dump()
	if len(after) != len(before) {
		s.t.Errorf("store has %d entries, had %d before the refused command", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			s.t.Errorf("entry %q changed by a refused command", k)
		}
	}
	if s.rev != rev {
		s.t.Errorf("revision moved from %d to %d", rev, s.rev)
	}
}

// wantErr fails unless err wraps target and its message holds every part.
func wantErr(t *testing.T, err, target error, parts ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func inst(service, id string) *catalogpb.Instance {
	return &catalogpb.Instance{Service: service, Id: id, Address: "10.0.0.1:8080"}
}

// eventSummary is "TYPE kind key" per event, for compact assertions.
func eventSummary(evs []*catalogpb.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type.String()+" "+ev.Kind+" "+string(ev.Kv.GetKey()))
	}
	return out
}

func wantEvents(t *testing.T, evs []*catalogpb.Event, want ...string) {
	t.Helper()
	if got := eventSummary(evs); !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
}

func protoEqual(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
