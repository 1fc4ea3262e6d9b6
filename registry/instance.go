package registry

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
)

// InstanceKey is an instance's logical key in events and lease items:
// "service/id". Service names hold no '/', so it splits unambiguously.
func InstanceKey(service, id string) string { return service + "/" + id }

// SplitInstanceKey splits a logical instance key into service and id.
func SplitInstanceKey(key string) (service, id string, ok bool) {
	return strings.Cut(key, "/")
}

// instanceKey is an instance's key in InstancesBucket.
func instanceKey(service, id string) []byte {
	k := make([]byte, 0, len(service)+1+len(id))
	k = append(k, service...)
	k = append(k, 0)
	return append(k, id...)
}

func instancePrefix(service string) []byte {
	return append([]byte(service), 0)
}

func getInstance(b *bbolt.Bucket, service, id string) (*catalogpb.Instance, error) {
	inst := &catalogpb.Instance{}
	found, err := getProto(b, instanceKey(service, id), inst)
	if err != nil || !found {
		return nil, err
	}
	return inst, nil
}

// forEachInstanceOf calls fn for every instance of service, in id order.
// fn must not write to b.
func forEachInstanceOf(b *bbolt.Bucket, service string, fn func(k []byte, inst *catalogpb.Instance) error) error {
	prefix := instancePrefix(service)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		inst := &catalogpb.Instance{}
		if err := proto.Unmarshal(v, inst); err != nil {
			return fmt.Errorf("registry: stored instance %s is corrupt: %w", quoteKey(k), err)
		}
		if err := fn(k, inst); err != nil {
			return err
		}
	}
	return nil
}

// ForEachInstance calls fn for every instance of every service, in (service,
// id) order, until fn returns an error. The health checker uses it to find
// the instances that ask for checks.
func ForEachInstance(tx *bbolt.Tx, fn func(inst *catalogpb.Instance) error) error {
	ib, err := bucket(tx, InstancesBucket)
	if err != nil {
		return err
	}
	return ib.ForEach(func(k, v []byte) error {
		inst := &catalogpb.Instance{}
		if err := proto.Unmarshal(v, inst); err != nil {
			return fmt.Errorf("registry: stored instance %s is corrupt: %w", quoteKey(k), err)
		}
		return fn(inst)
	})
}

func instanceNotFound(service, id string) error {
	return fmt.Errorf("%w: instance %s of service %s does not exist", ErrInstanceNotFound, quote(id), quote(service))
}

func instancePutEvent(inst, prev *catalogpb.Instance) *catalogpb.Event {
	key := InstanceKey(inst.Service, inst.Id)
	ev := &catalogpb.Event{
		Type:     catalogpb.Event_PUT,
		Kind:     InstanceKind,
		Kv:       kvOf(key, inst.CreateRevision, inst.ModRevision, 0),
		Instance: inst,
	}
	if prev != nil {
		ev.PrevKv = kvOf(key, prev.CreateRevision, prev.ModRevision, 0)
		ev.PrevInstance = prev
	}
	return ev
}

func instanceDeleteEvent(rev int64, prev *catalogpb.Instance) *catalogpb.Event {
	key := InstanceKey(prev.Service, prev.Id)
	return &catalogpb.Event{
		Type:         catalogpb.Event_DELETE,
		Kind:         InstanceKind,
		Kv:           kvOf(key, 0, rev, 0),
		PrevKv:       kvOf(key, prev.CreateRevision, prev.ModRevision, 0),
		PrevInstance: prev,
	}
}

// sameInstance reports whether a and b differ only in their revisions.
func sameInstance(a, b *catalogpb.Instance) bool {
	a2, b2 := proto.CloneOf(a), proto.CloneOf(b)
	a2.CreateRevision, a2.ModRevision = 0, 0
	b2.CreateRevision, b2.ModRevision = 0, 0
	return proto.Equal(a2, b2)
}

// NormalizeCheck returns a copy of a valid check with every default filled
// in, as it is stored; nil stays nil.
func NormalizeCheck(c *catalogpb.HealthCheck) *catalogpb.HealthCheck {
	if c == nil {
		return nil
	}
	n := proto.CloneOf(c)
	if n.IntervalMs == 0 {
		n.IntervalMs = DefaultCheckIntervalMs
	}
	if n.TimeoutMs == 0 {
		n.TimeoutMs = min(DefaultCheckTimeoutMs, n.IntervalMs)
	}
	if n.FailuresBeforeCritical == 0 {
		n.FailuresBeforeCritical = DefaultFailuresBeforeCritical
	}
	if n.SuccessesBeforePassing == 0 {
		n.SuccessesBeforePassing = DefaultSuccessesBeforePassing
	}
	return n
}

// initialHealth is an instance's health before anyone reported it: an
// instance with a check is critical until its probes pass.
func initialHealth(check *catalogpb.HealthCheck) catalogpb.HealthStatus {
	if check != nil {
		return catalogpb.HealthStatus_CRITICAL
	}
	return catalogpb.HealthStatus_PASSING
}

// checkLeases makes sure the lease buckets exist before any lease call (the
// lease package assumes them).
func checkLeases(tx *bbolt.Tx) error {
	if tx.Bucket(lease.Bucket) == nil || tx.Bucket(lease.ItemsBucket) == nil {
		return fmt.Errorf("registry: lease buckets do not exist; call lease.CreateBuckets when the database is opened")
	}
	return nil
}

// ApplyRegister registers an instance, or updates it when its id is already
// registered in the service (create_revision is kept). now is the proposer's
// clock, for health_changed_unix_nano.
//
// The server owns dc (from the command), health, health_output,
// health_changed_unix_nano and the revisions: the instance's own values of
// those are ignored. A new instance starts PASSING without a check and
// CRITICAL with one; an update keeps the health unless the check changed.
// state STATE_UNSPECIFIED means STATE_SERVING for a new instance and the
// current state for an update; weight 0 means 1. The service is created if
// it does not exist. A lease other than 0 must exist; the instance is
// attached to it (and detached from the lease it had before).
//
// Registering what is already stored returns it and no events.
func ApplyRegister(tx *bbolt.Tx, rev int64, now int64, cmd *catalogpb.RegisterCommand) (*catalogpb.RegisterResponse, []*catalogpb.Event, error) {
	if err := validateRegisterCommand(cmd); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	if err := checkLeases(tx); err != nil {
		return nil, nil, err
	}
	sb, ib, _, err := registryBuckets(tx)
	if err != nil {
		return nil, nil, err
	}
	in := cmd.Instance
	if in.Lease != 0 && !lease.Exists(tx, in.Lease) {
		return nil, nil, fmt.Errorf("%w: instance.lease %d does not exist (it expired, was revoked or was never granted); grant a lease first, or use 0 for none",
			lease.ErrNotFound, in.Lease)
	}
	svc, err := getService(sb, in.Service)
	if err != nil {
		return nil, nil, err
	}
	old, err := getInstance(ib, in.Service, in.Id)
	if err != nil {
		return nil, nil, err
	}

	inst := &catalogpb.Instance{
		Service:        in.Service,
		Id:             in.Id,
		Address:        in.Address,
		Ports:          in.Ports,
		Tags:           in.Tags,
		Metadata:       in.Metadata,
		Zone:           in.Zone,
		Dc:             cmd.Dc,
		Weight:         max(in.Weight, 1),
		State:          in.State,
		Lease:          in.Lease,
		Check:          NormalizeCheck(in.Check),
		CreateRevision: rev,
		ModRevision:    rev,
	}
	inst = proto.CloneOf(inst) // own its maps and slices: the command is the caller's
	if old == nil {
		if inst.State == catalogpb.InstanceState_STATE_UNSPECIFIED {
			inst.State = catalogpb.InstanceState_STATE_SERVING
		}
		inst.Health = initialHealth(inst.Check)
		inst.HealthChangedUnixNano = now
	} else {
		inst.CreateRevision = old.CreateRevision
		if inst.State == catalogpb.InstanceState_STATE_UNSPECIFIED {
			inst.State = old.State
		}
		if proto.Equal(old.Check, inst.Check) {
			inst.Health, inst.HealthOutput, inst.HealthChangedUnixNano = old.Health, old.HealthOutput, old.HealthChangedUnixNano
		} else {
			// A new check has not probed anything yet: its verdict starts over.
			inst.Health, inst.HealthChangedUnixNano = initialHealth(inst.Check), old.HealthChangedUnixNano
			if inst.Health != old.Health {
				inst.HealthChangedUnixNano = now
			}
		}
		if sameInstance(old, inst) {
			return &catalogpb.RegisterResponse{Instance: old}, nil, nil
		}
	}

	var events []*catalogpb.Event
	if svc == nil {
		svc = &catalogpb.Service{Name: in.Service, CreateRevision: rev, ModRevision: rev}
		if err := putProto(sb, []byte(svc.Name), svc); err != nil {
			return nil, nil, err
		}
		events = append(events, servicePutEvent(svc, nil))
	}
	key := InstanceKey(inst.Service, inst.Id)
	if old != nil && old.Lease != inst.Lease {
		if err := lease.Detach(tx, old.Lease, InstanceKind, key); err != nil {
			return nil, nil, err
		}
	}
	if inst.Lease != 0 && (old == nil || old.Lease != inst.Lease) {
		if err := lease.Attach(tx, inst.Lease, InstanceKind, key); err != nil {
			return nil, nil, err
		}
	}
	if err := putProto(ib, instanceKey(inst.Service, inst.Id), inst); err != nil {
		return nil, nil, err
	}
	events = append(events, instancePutEvent(inst, old))
	return &catalogpb.RegisterResponse{Instance: inst}, events, nil
}

// ApplyDeregister deletes an instance and detaches it from its lease.
// Deregistering an instance that does not exist returns deleted false and no
// events.
func ApplyDeregister(tx *bbolt.Tx, rev int64, req *catalogpb.DeregisterRequest) (*catalogpb.DeregisterResponse, []*catalogpb.Event, error) {
	if err := ValidateDeregister(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	if err := checkLeases(tx); err != nil {
		return nil, nil, err
	}
	ib, err := bucket(tx, InstancesBucket)
	if err != nil {
		return nil, nil, err
	}
	old, err := getInstance(ib, req.Service, req.Id)
	if err != nil {
		return nil, nil, err
	}
	if old == nil {
		return &catalogpb.DeregisterResponse{}, nil, nil
	}
	ev, err := deleteInstance(tx, ib, rev, old)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.DeregisterResponse{Deleted: true}, []*catalogpb.Event{ev}, nil
}

func deleteInstance(tx *bbolt.Tx, ib *bbolt.Bucket, rev int64, old *catalogpb.Instance) (*catalogpb.Event, error) {
	if err := lease.Detach(tx, old.Lease, InstanceKind, InstanceKey(old.Service, old.Id)); err != nil {
		return nil, err
	}
	if err := ib.Delete(instanceKey(old.Service, old.Id)); err != nil {
		return nil, fmt.Errorf("registry: delete instance %s: %w", quote(InstanceKey(old.Service, old.Id)), err)
	}
	return instanceDeleteEvent(rev, old), nil
}

// lookupInstance finds an instance for a change: ErrServiceNotFound when
// the service does not exist, ErrInstanceNotFound when the instance does not.
func lookupInstance(tx *bbolt.Tx, service, id string) (*bbolt.Bucket, *catalogpb.Instance, error) {
	sb, ib, _, err := registryBuckets(tx)
	if err != nil {
		return nil, nil, err
	}
	inst, err := getInstance(ib, service, id)
	if err != nil {
		return nil, nil, err
	}
	if inst == nil {
		if sb.Get([]byte(service)) == nil {
			return nil, nil, serviceNotFound(service)
		}
		return nil, nil, instanceNotFound(service, id)
	}
	return ib, inst, nil
}

// ApplySetState sets an instance's lifecycle state. Setting the state it
// has returns the instance and no events.
func ApplySetState(tx *bbolt.Tx, rev int64, req *catalogpb.SetStateRequest) (*catalogpb.SetStateResponse, []*catalogpb.Event, error) {
	if err := ValidateSetState(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	ib, old, err := lookupInstance(tx, req.Service, req.Id)
	if err != nil {
		return nil, nil, err
	}
	if old.State == req.State {
		return &catalogpb.SetStateResponse{Instance: old}, nil, nil
	}
	inst := proto.CloneOf(old)
	inst.State, inst.ModRevision = req.State, rev
	if err := putProto(ib, instanceKey(inst.Service, inst.Id), inst); err != nil {
		return nil, nil, err
	}
	return &catalogpb.SetStateResponse{Instance: inst}, []*catalogpb.Event{instancePutEvent(inst, old)}, nil
}

// ApplySetHealth sets an instance's health and output. With if_health set,
// the change applies only while the instance's health is if_health; otherwise
// the instance is returned unchanged, without events or error (a stale
// transition of a checker is dropped). health_changed_unix_nano moves to now
// only when the health changes. Setting what is stored returns no events.
func ApplySetHealth(tx *bbolt.Tx, rev int64, now int64, req *catalogpb.SetHealthRequest) (*catalogpb.SetHealthResponse, []*catalogpb.Event, error) {
	if err := ValidateSetHealth(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	ib, old, err := lookupInstance(tx, req.Service, req.Id)
	if err != nil {
		return nil, nil, err
	}
	if req.IfHealth != catalogpb.HealthStatus_HEALTH_UNSPECIFIED && req.IfHealth != old.Health {
		return &catalogpb.SetHealthResponse{Instance: old}, nil, nil
	}
	if old.Health == req.Health && old.HealthOutput == req.Output {
		return &catalogpb.SetHealthResponse{Instance: old}, nil, nil
	}
	inst := proto.CloneOf(old)
	if inst.Health != req.Health {
		inst.Health, inst.HealthChangedUnixNano = req.Health, now
	}
	inst.HealthOutput, inst.ModRevision = req.Output, rev
	if err := putProto(ib, instanceKey(inst.Service, inst.Id), inst); err != nil {
		return nil, nil, err
	}
	return &catalogpb.SetHealthResponse{Instance: inst}, []*catalogpb.Event{instancePutEvent(inst, old)}, nil
}

// deleteLeasedInstance deletes the instance a revoked lease carried, with its
// DELETE event at rev. An instance already gone, or registered since with
// another lease, is left alone and gives no events. The lease's item index
// is the revoke's to clear.
func deleteLeasedInstance(tx *bbolt.Tx, rev int64, leaseID int64, key string) ([]*catalogpb.Event, error) {
	service, id, ok := SplitInstanceKey(key)
	if !ok {
		return nil, fmt.Errorf("registry: lease %d holds instance item %s, which is not service/id", leaseID, quote(key))
	}
	if err := checkRevision(rev); err != nil {
		return nil, err
	}
	ib, err := bucket(tx, InstancesBucket)
	if err != nil {
		return nil, err
	}
	inst, err := getInstance(ib, service, id)
	if err != nil {
		return nil, err
	}
	if inst == nil || inst.Lease != leaseID {
		return nil, nil
	}
	if err := ib.Delete(instanceKey(service, id)); err != nil {
		return nil, fmt.Errorf("registry: delete instance %s of lease %d: %w", quote(key), leaseID, err)
	}
	return []*catalogpb.Event{instanceDeleteEvent(rev, inst)}, nil
}

// GetInstance returns one instance: ErrServiceNotFound when the service does
// not exist, ErrInstanceNotFound when the instance does not. The request's
// consistency is the server's business and is ignored here.
func GetInstance(tx *bbolt.Tx, req *catalogpb.GetInstanceRequest) (*catalogpb.GetInstanceResponse, error) {
	if err := ValidateGetInstance(req); err != nil {
		return nil, err
	}
	_, inst, err := lookupInstance(tx, req.Service, req.Id)
	if err != nil {
		return nil, err
	}
	return &catalogpb.GetInstanceResponse{Instance: inst}, nil
}

// GetService returns a service and its instances that match req.Filter, in
// id order after req.After, at most req.Limit of them (0:
// DefaultGetServiceLimit). Count is the number of matching instances in the
// whole service, whichever page is read. The request's consistency is the
// server's business and is ignored here.
func GetService(tx *bbolt.Tx, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	return serviceWithInstances(tx, req, false)
}

// GetServiceEncoded is GetService for sending: the instances are not decoded
// but carried as their stored encoding in the response's unknown fields,
// each as field 3 (instances). On the wire that is exactly the Instances
// field, so a receiver decodes them as usual; in this process Instances
// stays empty. It saves decoding and re-encoding every instance of a large
// service on each discovery.
func GetServiceEncoded(tx *bbolt.Tx, req *catalogpb.GetServiceRequest) (*catalogpb.GetServiceResponse, error) {
	return serviceWithInstances(tx, req, true)
}

// instancesField is the field number of GetServiceResponse.instances.
const instancesField protowire.Number = 3

func serviceWithInstances(tx *bbolt.Tx, req *catalogpb.GetServiceRequest, encoded bool) (*catalogpb.GetServiceResponse, error) {
	if err := ValidateGetService(req); err != nil {
		return nil, err
	}
	sb, ib, _, err := registryBuckets(tx)
	if err != nil {
		return nil, err
	}
	svc, err := getService(sb, req.Name)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, serviceNotFound(req.Name)
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultGetServiceLimit
	}
	resp := &catalogpb.GetServiceResponse{Service: svc}
	filtered := !isEmptyFilter(req.Filter)
	fullScan := filtered && (len(req.Filter.Tags) > 0 || len(req.Filter.Metadata) > 0)
	prefix := instancePrefix(req.Name)
	var raw []byte
	var onPageCount int64
	// scratch receives the scanned fields of each instance in turn.
	scratch := &catalogpb.Instance{}
	c := ib.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		afterCursor := string(k[len(prefix):]) > req.After
		onPage := afterCursor && onPageCount < limit
		if !filtered && !onPage {
			// Nothing to decode: every instance matches, and this one is
			// only counted.
			resp.Count++
			if afterCursor {
				resp.More = true
			}
			continue
		}
		if filtered {
			fields, err := scanInstance(scratch, v, fullScan)
			if err != nil {
				return nil, fmt.Errorf("registry: stored instance %s is corrupt: %w", quoteKey(k), err)
			}
			if !MatchInstance(req.Filter, fields) {
				continue
			}
		}
		resp.Count++
		if !onPage {
			if afterCursor {
				resp.More = true
			}
			continue
		}
		onPageCount++
		if encoded {
			if raw == nil {
				// Room for a page of instances like this one, up to 1000.
				raw = make([]byte, 0, (len(v)+4)*int(min(limit, 1000)))
			}
			raw = protowire.AppendTag(raw, instancesField, protowire.BytesType)
			raw = protowire.AppendBytes(raw, v)
			continue
		}
		inst := &catalogpb.Instance{}
		if err := proto.Unmarshal(v, inst); err != nil {
			return nil, fmt.Errorf("registry: stored instance %s is corrupt: %w", quoteKey(k), err)
		}
		resp.Instances = append(resp.Instances, inst)
	}
	if len(raw) > 0 {
		resp.ProtoReflect().SetUnknown(raw)
	}
	return resp, nil
}

// Field numbers of catalogpb.Instance that filters look at.
const (
	instTagsField     protowire.Number = 5
	instMetadataField protowire.Number = 6
	instZoneField     protowire.Number = 7
	instStateField    protowire.Number = 10
	instHealthField   protowire.Number = 11
)

// scanInstance reads from a stored instance's encoding the fields a filter
// looks at (state, health, zone, and with full also tags and metadata) into
// inst, which it resets first, without decoding the rest.
func scanInstance(inst *catalogpb.Instance, b []byte, full bool) (*catalogpb.Instance, error) {
	inst.State, inst.Health, inst.Zone, inst.Tags, inst.Metadata = 0, 0, "", inst.Tags[:0], nil
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == instStateField && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			inst.State, n = catalogpb.InstanceState(v), m
		case num == instHealthField && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			inst.Health, n = catalogpb.HealthStatus(v), m
		case num == instZoneField && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			inst.Zone, n = string(v), m
		case full && num == instTagsField && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			inst.Tags, n = append(inst.Tags, string(v)), m
		case full && num == instMetadataField && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m >= 0 {
				key, value, err := scanMapEntry(v)
				if err != nil {
					return nil, err
				}
				if inst.Metadata == nil {
					inst.Metadata = make(map[string]string)
				}
				inst.Metadata[key] = value
			}
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return inst, nil
}

// scanMapEntry reads a map<string, string> entry: key 1, value 2.
func scanMapEntry(b []byte) (key, value string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", "", protowire.ParseError(m)
			}
			if num == 1 {
				key = string(v)
			} else {
				value = string(v)
			}
			n = m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", "", protowire.ParseError(n)
			}
		}
		b = b[n:]
	}
	return key, value, nil
}

func isEmptyFilter(f *catalogpb.InstanceFilter) bool {
	return f == nil || len(f.Health) == 0 && len(f.State) == 0 && len(f.Tags) == 0 &&
		f.Zone == "" && len(f.Metadata) == 0 && !f.Healthy
}

// MatchInstance reports whether inst passes filter f (nil passes all): every
// set field of f must match.
func MatchInstance(f *catalogpb.InstanceFilter, inst *catalogpb.Instance) bool {
	if f == nil {
		return true
	}
	if f.Healthy {
		if inst.Health != catalogpb.HealthStatus_PASSING && inst.Health != catalogpb.HealthStatus_WARNING ||
			inst.State != catalogpb.InstanceState_STATE_SERVING {
			return false
		}
	}
	if len(f.Health) > 0 && !slices.Contains(f.Health, inst.Health) {
		return false
	}
	if len(f.State) > 0 && !slices.Contains(f.State, inst.State) {
		return false
	}
	for _, t := range f.Tags {
		if !slices.Contains(inst.Tags, t) {
			return false
		}
	}
	if f.Zone != "" && inst.Zone != f.Zone {
		return false
	}
	for k, v := range f.Metadata {
		if got, ok := inst.Metadata[k]; !ok || got != v {
			return false
		}
	}
	return true
}
