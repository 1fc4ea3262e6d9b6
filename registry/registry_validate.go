package registry

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Limits of the service registry. Like the config store's, they keep one raft
// entry and one response to a size every member handles in bounded time.
const (
	MaxServiceNameLen   = 63
	MaxInstanceIDLen    = 128
	MaxTags             = 64
	MaxTagLen           = 128
	MaxMetadataPairs    = 64
	MaxMetadataKeyLen   = 128
	MaxMetadataValueLen = 512
	MaxZoneLen          = 64
	MaxDCLen            = 64
	MaxWeight           = 1000
	MaxPorts            = 64
	MaxPortNameLen      = 63
	MaxHostLen          = 253
	MaxDescriptionLen   = 1024
	MaxOwnerLen         = 256
	MaxHealthOutputLen  = 4096
	MaxCheckURLLen      = 2048

	// Health check timing, in milliseconds, and flap damping thresholds.
	MinCheckIntervalMs            = 1000
	MaxCheckIntervalMs            = 3600 * 1000
	DefaultCheckIntervalMs        = 10000
	DefaultCheckTimeoutMs         = 5000
	DefaultFailuresBeforeCritical = 3
	DefaultSuccessesBeforePassing = 2
	MaxCheckThreshold             = 10

	// DefaultListServicesLimit is the page size of ListServices with limit 0;
	// DefaultGetServiceLimit that of GetService's instances. MaxListLimit
	// bounds both.
	DefaultListServicesLimit = 1000
	DefaultGetServiceLimit   = 10000
	MaxListLimit             = 10000

	// Shard maps.
	MaxShards     = 10000
	MaxReplicas   = 64
	MaxTotalSlots = 1 << 20
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// ValidateServiceName checks a service name: a DNS label.
func ValidateServiceName(field, name string) error {
	ok := len(name) >= 1 && len(name) <= MaxServiceNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(name)-1
	}
	if !ok {
		return invalid("%s must be 1..%d characters of a-z, 0-9 and '-', not starting or ending with '-', got %s",
			field, MaxServiceNameLen, quote(name))
	}
	return nil
}

// ValidateInstanceID checks an instance id (shard ids follow the same rules).
func ValidateInstanceID(field, id string) error {
	ok := len(id) >= 1 && len(id) <= MaxInstanceIDLen
	for i := 0; ok && i < len(id); i++ {
		ok = isIDChar(id[i])
	}
	if !ok {
		return invalid("%s must be 1..%d characters of A-Z, a-z, 0-9, '.', '_', ':' and '-', got %s", field, MaxInstanceIDLen, quote(id))
	}
	return nil
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}

// quote formats client text for an error message, cut to a readable length.
func quote(s string) string { return quoteKey([]byte(s)) }

// ValidateHostPort checks a host:port address with a port of 1..65535.
func ValidateHostPort(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid("%s must be host:port (for example 10.0.0.5:8080 or [::1]:8080), got %s", field, quote(addr))
	}
	if host == "" || len(host) > MaxHostLen || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalid("%s host must be 1..%d bytes without spaces or control characters, got %s", field, MaxHostLen, quote(host))
	}
	if _, err := parsePort(port); err != nil {
		return invalid("%s port must be 1..65535, got %s", field, quote(port))
	}
	return nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, fmt.Errorf("not a port")
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("not a port")
	}
	return p, nil
}

func validateTags(field string, tags []string) error {
	if len(tags) > MaxTags {
		return invalid("%s may hold at most %d tags, got %d", field, MaxTags, len(tags))
	}
	for i, t := range tags {
		if len(t) == 0 || len(t) > MaxTagLen {
			return invalid("%s[%d] must be 1..%d bytes, got %d", field, i, MaxTagLen, len(t))
		}
	}
	return nil
}

// sortedKeys returns a map's keys in order, so that the first bad entry an
// error names is the same on every member and every call.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func validateMetadata(field string, md map[string]string) error {
	if len(md) > MaxMetadataPairs {
		return invalid("%s may hold at most %d pairs, got %d", field, MaxMetadataPairs, len(md))
	}
	for _, k := range sortedKeys(md) {
		if len(k) == 0 || len(k) > MaxMetadataKeyLen {
			return invalid("%s key must be 1..%d bytes, got %d (%s)", field, MaxMetadataKeyLen, len(k), quote(k))
		}
		if v := md[k]; len(v) > MaxMetadataValueLen {
			return invalid("%s value of key %s must be at most %d bytes, got %d", field, quote(k), MaxMetadataValueLen, len(v))
		}
	}
	return nil
}

func validateZone(field, zone string) error {
	if len(zone) > MaxZoneLen {
		return invalid("%s must be at most %d bytes, got %d", field, MaxZoneLen, len(zone))
	}
	return nil
}

// ValidateService checks a service as PutService receives it. Revisions are
// the server's and ignored.
func ValidateService(svc *catalogpb.Service) error {
	if svc == nil {
		return invalid("service is missing")
	}
	if err := ValidateServiceName("service.name", svc.Name); err != nil {
		return err
	}
	if len(svc.Description) > MaxDescriptionLen {
		return invalid("service.description must be at most %d bytes, got %d", MaxDescriptionLen, len(svc.Description))
	}
	if len(svc.Owner) > MaxOwnerLen {
		return invalid("service.owner must be at most %d bytes, got %d", MaxOwnerLen, len(svc.Owner))
	}
	if err := validateTags("service.tags", svc.Tags); err != nil {
		return err
	}
	return validateMetadata("service.metadata", svc.Metadata)
}

// ValidatePutService checks a PutService request.
func ValidatePutService(req *catalogpb.PutServiceRequest) error {
	if req == nil {
		return invalid("put service request is missing")
	}
	return ValidateService(req.Service)
}

// ValidateDeleteService checks a DeleteService request.
func ValidateDeleteService(req *catalogpb.DeleteServiceRequest) error {
	if req == nil {
		return invalid("delete service request is missing")
	}
	return ValidateServiceName("name", req.Name)
}

func validState(field string, s catalogpb.InstanceState, allowUnspecified bool) error {
	switch s {
	case catalogpb.InstanceState_STATE_STARTING, catalogpb.InstanceState_STATE_SERVING,
		catalogpb.InstanceState_STATE_DRAINING, catalogpb.InstanceState_STATE_STOPPED:
		return nil
	case catalogpb.InstanceState_STATE_UNSPECIFIED:
		if allowUnspecified {
			return nil
		}
	}
	return invalid("%s must be STATE_STARTING, STATE_SERVING, STATE_DRAINING or STATE_STOPPED, got %s", field, enumName(s))
}

func validHealth(field string, h catalogpb.HealthStatus, allowUnspecified bool) error {
	switch h {
	case catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING, catalogpb.HealthStatus_CRITICAL:
		return nil
	case catalogpb.HealthStatus_HEALTH_UNSPECIFIED:
		if allowUnspecified {
			return nil
		}
	}
	return invalid("%s must be PASSING, WARNING or CRITICAL, got %s", field, enumName(h))
}

// enumName names an enum value, known or not.
func enumName[E interface {
	~int32
	String() string
}](e E) string {
	return fmt.Sprintf("%s (%d)", e.String(), int32(e))
}

// ValidateInstance checks an instance as Register receives it. The fields the
// server owns (dc, health and its output and time, revisions) are ignored.
func ValidateInstance(in *catalogpb.Instance) error {
	if in == nil {
		return invalid("instance is missing")
	}
	if err := ValidateServiceName("instance.service", in.Service); err != nil {
		return err
	}
	if err := ValidateInstanceID("instance.id", in.Id); err != nil {
		return err
	}
	if err := ValidateHostPort("instance.address", in.Address); err != nil {
		return err
	}
	if len(in.Ports) > MaxPorts {
		return invalid("instance.ports may hold at most %d ports, got %d", MaxPorts, len(in.Ports))
	}
	for _, name := range sortedKeys(in.Ports) {
		if !validPortName(name) {
			return invalid("instance.ports name must be 1..%d characters of a-z, A-Z, 0-9, '_' and '-', got %s", MaxPortNameLen, quote(name))
		}
		if p := in.Ports[name]; p < 1 || p > 65535 {
			return invalid("instance.ports[%s] must be 1..65535, got %d", quote(name), p)
		}
	}
	if err := validateTags("instance.tags", in.Tags); err != nil {
		return err
	}
	if err := validateMetadata("instance.metadata", in.Metadata); err != nil {
		return err
	}
	if err := validateZone("instance.zone", in.Zone); err != nil {
		return err
	}
	if in.Weight < 0 || in.Weight > MaxWeight {
		return invalid("instance.weight must be 0..%d (0 means 1), got %d", MaxWeight, in.Weight)
	}
	if err := validState("instance.state", in.State, true); err != nil {
		return err
	}
	if in.Lease < 0 {
		return invalid("instance.lease must be 0 (none) or the id of a granted lease, got %d", in.Lease)
	}
	if in.Check != nil {
		return ValidateCheck(in.Check)
	}
	return nil
}

func validPortName(name string) bool {
	if len(name) < 1 || len(name) > MaxPortNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidateCheck checks a health check: exactly one of http, tcp and grpc, and
// timing and thresholds within bounds (0 means the default).
func ValidateCheck(c *catalogpb.HealthCheck) error {
	n := 0
	for _, target := range []string{c.Http, c.Tcp, c.Grpc} {
		if target != "" {
			n++
		}
	}
	if n != 1 {
		return invalid("instance.check must set exactly one of http, tcp and grpc, got %d", n)
	}
	switch {
	case c.Http != "":
		if len(c.Http) > MaxCheckURLLen {
			return invalid("instance.check.http must be at most %d bytes, got %d", MaxCheckURLLen, len(c.Http))
		}
		u, err := url.Parse(c.Http)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("instance.check.http must be an http:// or https:// URL with a host, got %s", quote(c.Http))
		}
	case c.Tcp != "":
		if err := ValidateHostPort("instance.check.tcp", c.Tcp); err != nil {
			return err
		}
	default:
		if err := ValidateHostPort("instance.check.grpc", c.Grpc); err != nil {
			return err
		}
	}
	if c.GrpcService != "" && c.Grpc == "" {
		return invalid("instance.check.grpc_service is only for grpc checks; set grpc or clear grpc_service")
	}
	if len(c.GrpcService) > MaxCheckURLLen {
		return invalid("instance.check.grpc_service must be at most %d bytes, got %d", MaxCheckURLLen, len(c.GrpcService))
	}
	interval := c.IntervalMs
	if interval == 0 {
		interval = DefaultCheckIntervalMs
	}
	if interval < MinCheckIntervalMs || interval > MaxCheckIntervalMs {
		return invalid("instance.check.interval_ms must be %d..%d (0 means %d), got %d",
			MinCheckIntervalMs, MaxCheckIntervalMs, DefaultCheckIntervalMs, c.IntervalMs)
	}
	if c.TimeoutMs < 0 || c.TimeoutMs > interval {
		return invalid("instance.check.timeout_ms must be 1..interval_ms (%d; 0 means %d or the interval if shorter), got %d",
			interval, DefaultCheckTimeoutMs, c.TimeoutMs)
	}
	if c.FailuresBeforeCritical < 0 || c.FailuresBeforeCritical > MaxCheckThreshold {
		return invalid("instance.check.failures_before_critical must be 1..%d (0 means %d), got %d",
			MaxCheckThreshold, DefaultFailuresBeforeCritical, c.FailuresBeforeCritical)
	}
	if c.SuccessesBeforePassing < 0 || c.SuccessesBeforePassing > MaxCheckThreshold {
		return invalid("instance.check.successes_before_passing must be 1..%d (0 means %d), got %d",
			MaxCheckThreshold, DefaultSuccessesBeforePassing, c.SuccessesBeforePassing)
	}
	return nil
}

// ValidateRegister checks a Register request.
func ValidateRegister(req *catalogpb.RegisterRequest) error {
	if req == nil {
		return invalid("register request is missing")
	}
	return ValidateInstance(req.Instance)
}

func validateRegisterCommand(cmd *catalogpb.RegisterCommand) error {
	if cmd == nil {
		return invalid("register command is missing")
	}
	if err := ValidateInstance(cmd.Instance); err != nil {
		return err
	}
	if len(cmd.Dc) > MaxDCLen {
		return invalid("dc must be at most %d bytes, got %d", MaxDCLen, len(cmd.Dc))
	}
	return nil
}

func validateInstanceRef(service, id string) error {
	if err := ValidateServiceName("service", service); err != nil {
		return err
	}
	return ValidateInstanceID("id", id)
}

// ValidateDeregister checks a Deregister request.
func ValidateDeregister(req *catalogpb.DeregisterRequest) error {
	if req == nil {
		return invalid("deregister request is missing")
	}
	return validateInstanceRef(req.Service, req.Id)
}

// ValidateSetState checks a SetState request.
func ValidateSetState(req *catalogpb.SetStateRequest) error {
	if req == nil {
		return invalid("set state request is missing")
	}
	if err := validateInstanceRef(req.Service, req.Id); err != nil {
		return err
	}
	return validState("state", req.State, false)
}

// ValidateSetHealth checks a SetHealth request.
func ValidateSetHealth(req *catalogpb.SetHealthRequest) error {
	if req == nil {
		return invalid("set health request is missing")
	}
	if err := validateInstanceRef(req.Service, req.Id); err != nil {
		return err
	}
	if err := validHealth("health", req.Health, false); err != nil {
		return err
	}
	if err := validHealth("if_health", req.IfHealth, true); err != nil {
		return err
	}
	if len(req.Output) > MaxHealthOutputLen {
		return invalid("output must be at most %d bytes, got %d", MaxHealthOutputLen, len(req.Output))
	}
	return nil
}

// ValidateFilter checks an instance filter; nil is no filter.
func ValidateFilter(f *catalogpb.InstanceFilter) error {
	if f == nil {
		return nil
	}
	for i, h := range f.Health {
		if err := validHealth(fmt.Sprintf("filter.health[%d]", i), h, false); err != nil {
			return err
		}
	}
	for i, s := range f.State {
		if err := validState(fmt.Sprintf("filter.state[%d]", i), s, false); err != nil {
			return err
		}
	}
	if err := validateTags("filter.tags", f.Tags); err != nil {
		return err
	}
	if err := validateZone("filter.zone", f.Zone); err != nil {
		return err
	}
	return validateMetadata("filter.metadata", f.Metadata)
}

func validateLimit(limit, def int64) error {
	if limit < 0 || limit > MaxListLimit {
		return fmt.Errorf("%w: limit must be 0..%d (0 means %d), got %d", ErrInvalidLimit, MaxListLimit, def, limit)
	}
	return nil
}

func validConsistency(c catalogpb.Consistency) error {
	if c != catalogpb.Consistency_LINEARIZABLE && c != catalogpb.Consistency_SERIALIZABLE {
		return invalid("consistency must be LINEARIZABLE or SERIALIZABLE, got %s", enumName(c))
	}
	return nil
}

// ValidateListServices checks a ListServices request.
func ValidateListServices(req *catalogpb.ListServicesRequest) error {
	if req == nil {
		return invalid("list services request is missing")
	}
	if err := validConsistency(req.Consistency); err != nil {
		return err
	}
	if err := validateLimit(req.Limit, DefaultListServicesLimit); err != nil {
		return err
	}
	if len(req.After) > MaxServiceNameLen {
		return invalid("after must be a service name of at most %d characters, got %d", MaxServiceNameLen, len(req.After))
	}
	if len(req.Tag) > MaxTagLen {
		return invalid("tag must be at most %d bytes, got %d", MaxTagLen, len(req.Tag))
	}
	return nil
}

// ValidateGetService checks a GetService request.
func ValidateGetService(req *catalogpb.GetServiceRequest) error {
	if req == nil {
		return invalid("get service request is missing")
	}
	if err := ValidateServiceName("name", req.Name); err != nil {
		return err
	}
	if err := validConsistency(req.Consistency); err != nil {
		return err
	}
	if err := validateLimit(req.Limit, DefaultGetServiceLimit); err != nil {
		return err
	}
	if len(req.After) > MaxInstanceIDLen {
		return invalid("after must be an instance id of at most %d characters, got %d", MaxInstanceIDLen, len(req.After))
	}
	return ValidateFilter(req.Filter)
}

// ValidateGetInstance checks a GetInstance request.
func ValidateGetInstance(req *catalogpb.GetInstanceRequest) error {
	if req == nil {
		return invalid("get instance request is missing")
	}
	if err := validateInstanceRef(req.Service, req.Id); err != nil {
		return err
	}
	return validConsistency(req.Consistency)
}

// ValidateGetShardMap checks a GetShardMap request.
func ValidateGetShardMap(req *catalogpb.GetShardMapRequest) error {
	if req == nil {
		return invalid("get shard map request is missing")
	}
	if err := ValidateServiceName("service", req.Service); err != nil {
		return err
	}
	return validConsistency(req.Consistency)
}

// ValidateSetShardMap checks a SetShardMap request without touching the
// store: shard ids unique; every shard holds a key range when total_slots is
// 0 and slots otherwise; ranges and slots of different shards do not overlap;
// replicas are unique valid instance ids.
func ValidateSetShardMap(req *catalogpb.SetShardMapRequest) error {
	if req == nil {
		return invalid("set shard map request is missing")
	}
	if req.ExpectedEpoch < 0 {
		return invalid("expected_epoch must be 0 (no map yet) or the stored map's epoch, got %d", req.ExpectedEpoch)
	}
	m := req.Map
	if m == nil {
		return invalid("map is missing")
	}
	if err := ValidateServiceName("map.service", m.Service); err != nil {
		return err
	}
	if m.TotalSlots < 0 || m.TotalSlots > MaxTotalSlots {
		return invalid("map.total_slots must be 0..%d (0: shards hold key ranges), got %d", MaxTotalSlots, m.TotalSlots)
	}
	if len(m.Shards) > MaxShards {
		return invalid("map.shards may hold at most %d shards, got %d", MaxShards, len(m.Shards))
	}
	ids := make(map[string]int, len(m.Shards))
	for i, sh := range m.Shards {
		if sh == nil {
			return invalid("map.shards[%d] is missing", i)
		}
		field := fmt.Sprintf("map.shards[%d]", i)
		if err := ValidateInstanceID(field+".id", sh.Id); err != nil {
			return err
		}
		if j, dup := ids[sh.Id]; dup {
			return invalid("map.shards[%d] and map.shards[%d] have the same id %s; shard ids must be unique", j, i, quote(sh.Id))
		}
		ids[sh.Id] = i
		if err := validateShardSpace(field, sh, m.TotalSlots); err != nil {
			return err
		}
		if err := validateReplicas(field, sh.Replicas); err != nil {
			return err
		}
	}
	if m.TotalSlots == 0 {
		if err := checkRangesDisjoint(m.Shards); err != nil {
			return err
		}
	} else if err := checkSlotsDisjoint(m.Shards); err != nil {
		return err
	}
	return validateSize(req)
}

func validateShardSpace(field string, sh *catalogpb.Shard, totalSlots int32) error {
	hasRange := len(sh.StartKey) > 0 || len(sh.EndKey) > 0
	if totalSlots == 0 {
		if len(sh.Slots) > 0 {
			return invalid("%s has slots but map.total_slots is 0; set total_slots for a slot map, or give shards key ranges", field)
		}
		if len(sh.StartKey) > MaxKeySize || len(sh.EndKey) > MaxKeySize {
			return invalid("%s start_key and end_key must be at most %d bytes", field, MaxKeySize)
		}
		if len(sh.EndKey) > 0 && bytes.Compare(sh.StartKey, sh.EndKey) >= 0 {
			return invalid("%s range [start_key, end_key) must have start_key < end_key (empty end_key: the end of the key space), got [%s, %s)",
				field, quoteKey(sh.StartKey), quoteKey(sh.EndKey))
		}
		return nil
	}
	if hasRange {
		return invalid("%s has both a key range and a slot map (total_slots %d); a shard holds either a key range or slots, not both", field, totalSlots)
	}
	if len(sh.Slots) == 0 {
		return invalid("%s holds no slots; in a slot map (total_slots %d) every shard needs at least one slot range", field, totalSlots)
	}
	for j, r := range sh.Slots {
		if r == nil {
			return invalid("%s.slots[%d] is missing", field, j)
		}
		if r.From < 0 || r.To >= totalSlots || r.From > r.To {
			return invalid("%s.slots[%d] must be [from, to] with 0 <= from <= to <= %d (total_slots - 1), got [%d, %d]",
				field, j, totalSlots-1, r.From, r.To)
		}
	}
	return nil
}

func validateReplicas(field string, replicas []string) error {
	if len(replicas) > MaxReplicas {
		return invalid("%s.replicas may hold at most %d instance ids, got %d", field, MaxReplicas, len(replicas))
	}
	for j, r := range replicas {
		if err := ValidateInstanceID(fmt.Sprintf("%s.replicas[%d]", field, j), r); err != nil {
			return err
		}
		for k := range j {
			if replicas[k] == r {
				return invalid("%s.replicas[%d] and [%d] are both %s; a replica appears once", field, k, j, quote(r))
			}
		}
	}
	return nil
}

// checkRangesDisjoint refuses key ranges that overlap. Empty end_key is the
// end of the key space.
func checkRangesDisjoint(shards []*catalogpb.Shard) error {
	order := make([]int, len(shards))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(shards[a].StartKey, shards[b].StartKey) })
	for k := 1; k < len(order); k++ {
		prev, cur := shards[order[k-1]], shards[order[k]]
		if len(prev.EndKey) == 0 || bytes.Compare(cur.StartKey, prev.EndKey) < 0 {
			return invalid("shards %s [%s, %s) and %s [%s, %s) overlap; key ranges of different shards must not overlap",
				quote(prev.Id), quoteKey(prev.StartKey), endName(prev.EndKey), quote(cur.Id), quoteKey(cur.StartKey), endName(cur.EndKey))
		}
	}
	return nil
}

func endName(end []byte) string {
	if len(end) == 0 {
		return "end"
	}
	return quoteKey(end)
}

// checkSlotsDisjoint refuses slot ranges that overlap, within a shard or
// across shards.
func checkSlotsDisjoint(shards []*catalogpb.Shard) error {
	type owned struct {
		from, to int32
		shard    string
	}
	var all []owned
	for _, sh := range shards {
		for _, r := range sh.Slots {
			all = append(all, owned{r.From, r.To, sh.Id})
		}
	}
	slices.SortStableFunc(all, func(a, b owned) int { return int(a.from) - int(b.from) })
	for k := 1; k < len(all); k++ {
		if all[k].from <= all[k-1].to {
			return invalid("slots [%d, %d] of shard %s and [%d, %d] of shard %s overlap; a slot belongs to one shard once",
				all[k-1].from, all[k-1].to, quote(all[k-1].shard), all[k].from, all[k].to, quote(all[k].shard))
		}
	}
	return nil
}
