package sdk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A Filter narrows the instances Discover and a Resolver return. Filters
// combine: an instance must match every one.
type Filter func(*filterSettings)

type filterSettings struct {
	filter       *catalogpb.InstanceFilter
	serializable bool
}

func newFilterSettings(filters []Filter) filterSettings {
	s := filterSettings{filter: &catalogpb.InstanceFilter{}}
	for _, f := range filters {
		if f != nil {
			f(&s)
		}
	}
	return s
}

// Healthy keeps instances that can take traffic: health PASSING or WARNING
// and state SERVING.
func Healthy() Filter {
	return func(s *filterSettings) { s.filter.Healthy = true }
}

// HasTag keeps instances carrying tag; several HasTag need every tag.
func HasTag(tag string) Filter {
	return func(s *filterSettings) { s.filter.Tags = append(s.filter.Tags, tag) }
}

// InZone keeps instances of zone.
func InZone(zone string) Filter {
	return func(s *filterSettings) { s.filter.Zone = zone }
}

// WithMeta keeps instances whose metadata maps key to value; several WithMeta
// need every pair.
func WithMeta(key, value string) Filter {
	return func(s *filterSettings) {
		if s.filter.Metadata == nil {
			s.filter.Metadata = make(map[string]string)
		}
		s.filter.Metadata[key] = value
	}
}

// InState keeps instances in one of the given lifecycle states.
func InState(states ...catalogpb.InstanceState) Filter {
	return func(s *filterSettings) { s.filter.State = append(s.filter.State, states...) }
}

// WithHealth keeps instances with one of the given health values.
func WithHealth(health ...catalogpb.HealthStatus) Filter {
	return func(s *filterSettings) { s.filter.Health = append(s.filter.Health, health...) }
}

// Serializable makes Discover, and a Resolver's listings, answer from the
// contacted server's local state at once instead of a linearizable read: it
// may be stale by a few entries, and it answers while the cluster has no
// leader.
func Serializable() Filter {
	return func(s *filterSettings) { s.serializable = true }
}

func (s filterSettings) consistency() catalogpb.Consistency {
	if s.serializable {
		return catalogpb.Consistency_SERIALIZABLE
	}
	return catalogpb.Consistency_LINEARIZABLE
}

// matchInstance reports whether inst passes f, as the servers decide it for
// GetService: every set field of f must match.
func matchInstance(f *catalogpb.InstanceFilter, inst *catalogpb.Instance) bool {
	if f.GetHealthy() {
		h := inst.GetHealth()
		if (h != catalogpb.HealthStatus_PASSING && h != catalogpb.HealthStatus_WARNING) ||
			inst.GetState() != catalogpb.InstanceState_STATE_SERVING {
			return false
		}
	}
	if len(f.GetHealth()) > 0 && !slices.Contains(f.GetHealth(), inst.GetHealth()) {
		return false
	}
	if len(f.GetState()) > 0 && !slices.Contains(f.GetState(), inst.GetState()) {
		return false
	}
	for _, tag := range f.GetTags() {
		if !slices.Contains(inst.GetTags(), tag) {
			return false
		}
	}
	if f.GetZone() != "" && inst.GetZone() != f.GetZone() {
		return false
	}
	for k, v := range f.GetMetadata() {
		if got, ok := inst.GetMetadata()[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Discover returns the instances of service that pass filters, every page of
// them, ordered by id. A service that does not exist fails with
// ErrServiceNotFound. For repeated lookups NewResolver keeps a live cache.
func (c *Client) Discover(ctx context.Context, service string, filters ...Filter) ([]*catalogpb.Instance, error) {
	s := newFilterSettings(filters)
	insts, _, err := c.listInstances(ctx, service, s.filter, s.consistency())
	return insts, err
}

// listInstances reads every page of service's instances passing f. rev is
// the oldest revision among the pages (serializable pages may come from
// members at different revisions): a watch from rev+1 misses nothing.
func (c *Client) listInstances(ctx context.Context, service string, f *catalogpb.InstanceFilter, consistency catalogpb.Consistency) ([]*catalogpb.Instance, int64, error) {
	var (
		all   []*catalogpb.Instance
		rev   int64
		after string
	)
	for {
		resp, err := c.GetService(ctx, &catalogpb.GetServiceRequest{
			Name: service, Filter: f, Consistency: consistency, After: after,
		})
		if err != nil {
			return nil, 0, err
		}
		if r := resp.GetHeader().GetRevision(); rev == 0 || r < rev {
			rev = r
		}
		all = append(all, resp.GetInstances()...)
		if !resp.GetMore() || len(resp.GetInstances()) == 0 {
			return all, rev, nil
		}
		after = resp.GetInstances()[len(resp.GetInstances())-1].GetId()
	}
}

// WatchService streams the changes of service: its record and its instances
// ("" watches every service). See Watch for the guarantees.
func (c *Client) WatchService(ctx context.Context, service string, opts ...WatchOption) WatchChan {
	return c.Watch(ctx, WatchServiceFilter(service), opts...)
}

// instanceSource is what a Resolver reads: a listing and a watch. The Client
// is the real one; tests give a fake.
type instanceSource interface {
	// list returns every instance of service (nil when the service does not
	// exist) and a revision to watch after.
	list(ctx context.Context, service string, consistency catalogpb.Consistency) ([]*catalogpb.Instance, int64, error)
	// watch streams service's events from startRev.
	watch(ctx context.Context, service string, startRev int64) WatchChan
	// closed reports whether the source can never answer again.
	closed() bool
}

type clientSource struct{ c *Client }

func (s clientSource) list(ctx context.Context, service string, consistency catalogpb.Consistency) ([]*catalogpb.Instance, int64, error) {
	insts, rev, err := s.c.listInstances(ctx, service, nil, consistency)
	if !errors.Is(err, ErrServiceNotFound) {
		return insts, rev, err
	}
	// The service does not exist (yet): watch from a revision read before
	// a second look. Every event after it is replayed onto the empty set, and
	// since the set was empty at the second look, whatever those events add
	// they also delete, up to that look. Both reads are linearizable: a
	// second look at a member behind the first would not be later.
	probe, err := s.c.ListServices(ctx, &catalogpb.ListServicesRequest{Limit: 1})
	if err != nil {
		return nil, 0, err
	}
	insts, rev, err = s.c.listInstances(ctx, service, nil, catalogpb.Consistency_LINEARIZABLE)
	if errors.Is(err, ErrServiceNotFound) {
		return nil, probe.GetHeader().GetRevision(), nil
	}
	return insts, rev, err
}

func (s clientSource) watch(ctx context.Context, service string, startRev int64) WatchChan {
	return s.c.Watch(ctx, WatchServiceFilter(service), WithStartRevision(startRev), WithProgressNotify())
}

func (s clientSource) closed() bool { return s.c.isClosed() }

// A Resolver keeps the instances of one service in memory, kept live by a
// watch: it lists the service, then watches from the listing's revision, and
// lists again if the watch falls behind the servers' history (compacted).
// Instances answers from memory without a network call. It is safe for
// concurrent use.
type Resolver struct {
	src     instanceSource
	service string
	filter  *catalogpb.InstanceFilter
	consist catalogpb.Consistency

	// retryMin and retryMax bound the wait before listing or watching again
	// after a failure.
	retryMin, retryMax time.Duration

	mu        sync.RWMutex
	instances map[string]*catalogpb.Instance
	// sorted is the instances ordered by id, rebuilt on the first read after
	// a change (nil until then).
	sorted []*catalogpb.Instance
	rev    int64

	updatesC chan struct{}
	cancel   context.CancelFunc
	donec    chan struct{}
	closeMu  sync.Mutex
	closed   bool
}

// NewResolver lists service and returns a Resolver kept live until Close.
// ctx bounds the first listing only. filters choose what Instances returns
// (Serializable makes the listings serializable); the cache holds every
// instance of the service. A service that does not exist yet is an empty set
// that fills when instances register.
func (c *Client) NewResolver(ctx context.Context, service string, filters ...Filter) (*Resolver, error) {
	return newResolver(ctx, clientSource{c}, service, filters)
}

func newResolver(ctx context.Context, src instanceSource, service string, filters []Filter) (*Resolver, error) {
	if service == "" {
		return nil, fmt.Errorf("%w: resolver: service name is empty", ErrInvalidArgument)
	}
	s := newFilterSettings(filters)
	r := &Resolver{
		src:       src,
		service:   service,
		filter:    s.filter,
		consist:   s.consistency(),
		retryMin:  50 * time.Millisecond,
		retryMax:  2 * time.Second,
		instances: make(map[string]*catalogpb.Instance),
		updatesC:  make(chan struct{}, 1),
		donec:     make(chan struct{}),
	}
	insts, rev, err := src.list(ctx, service, r.consist)
	if err != nil {
		return nil, fmt.Errorf("list service %q: %w", service, err)
	}
	r.replace(insts, rev)
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(runCtx)
	return r, nil
}

// Service returns the name of the service the resolver follows.
func (r *Resolver) Service() string { return r.service }

// Instances returns the cached instances that pass the resolver's filters,
// ordered by id. The instances are shared with the cache: read them, do not
// modify them.
func (r *Resolver) Instances() []*catalogpb.Instance {
	r.mu.RLock()
	sorted := r.sorted
	r.mu.RUnlock()
	if sorted == nil {
		r.mu.Lock()
		sorted = r.sortedLocked()
		r.mu.Unlock()
	}
	out := make([]*catalogpb.Instance, 0, len(sorted))
	for _, inst := range sorted {
		if matchInstance(r.filter, inst) {
			out = append(out, inst)
		}
	}
	return out
}

func (r *Resolver) sortedLocked() []*catalogpb.Instance {
	if r.sorted != nil {
		return r.sorted
	}
	sorted := make([]*catalogpb.Instance, 0, len(r.instances))
	for _, inst := range r.instances {
		sorted = append(sorted, inst)
	}
	slices.SortFunc(sorted, func(a, b *catalogpb.Instance) int { return strings.Compare(a.GetId(), b.GetId()) })
	r.sorted = sorted
	return sorted
}

// Revision returns the revision the cache reflects: every change up to it
// is applied.
func (r *Resolver) Revision() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.rev
}

// Updates receives a value after the cache changed, the first listing
// included when it found instances (several changes may share one value:
// read Instances after it). It is closed by Close.
func (r *Resolver) Updates() <-chan struct{} { return r.updatesC }

// Close stops the watch. Instances keeps answering what was cached last.
func (r *Resolver) Close() {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	r.cancel()
	<-r.donec
	close(r.updatesC)
}

func (r *Resolver) notify() {
	select {
	case r.updatesC <- struct{}{}:
	default:
	}
}

// run watches from the cached revision until ctx ends, listing again when
// the watch cannot resume (compacted).
func (r *Resolver) run(ctx context.Context) {
	defer close(r.donec)
	failures, relist := 0, false
	for ctx.Err() == nil {
		if relist {
			insts, rev, err := r.src.list(ctx, r.service, r.consist)
			if err != nil {
				failures++
				if r.src.closed() || sleepCtx(ctx, backoffWait(r.retryMin, r.retryMax, failures-1)) != nil {
					return
				}
				continue
			}
			r.replace(insts, rev)
			failures, relist = 0, false
		}
		err := r.follow(ctx)
		if ctx.Err() != nil || r.src.closed() {
			return
		}
		if errors.Is(err, ErrCompacted) {
			relist = true
			continue
		}
		failures++
		if sleepCtx(ctx, backoffWait(r.retryMin, r.retryMax, failures-1)) != nil {
			return
		}
	}
}

// backoffWait is the pause after failures failures in a row: doubling from
// lo, capped at hi.
func backoffWait(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 0; i < failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// follow watches from the cached revision + 1 and applies what comes until
// the watch ends, returning why.
func (r *Resolver) follow(ctx context.Context) error {
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range r.src.watch(watchCtx, r.service, r.Revision()+1) {
		if resp.Err != nil {
			return resp.Err
		}
		r.apply(resp)
	}
	return ctx.Err()
}

// replace sets the cache to a listing taken at rev.
func (r *Resolver) replace(insts []*catalogpb.Instance, rev int64) {
	next := make(map[string]*catalogpb.Instance, len(insts))
	for _, inst := range insts {
		next[inst.GetId()] = inst
	}
	r.mu.Lock()
	changed := len(next) != len(r.instances)
	for id, inst := range next {
		old, ok := r.instances[id]
		if !ok || old.GetModRevision() != inst.GetModRevision() {
			changed = true
			break
		}
	}
	r.instances = next
	r.sorted = nil
	r.rev = rev
	r.mu.Unlock()
	if changed {
		r.notify()
	}
}

// apply applies one watch response to the cache.
func (r *Resolver) apply(resp WatchResponse) {
	r.mu.Lock()
	changed := false
	rev := r.rev
	for _, ev := range resp.Events {
		if r.applyEvent(ev) {
			changed = true
		}
		rev = max(rev, eventRevision(ev))
	}
	// The watch has seen every change up to its header's revision, events
	// or not (a bookmark).
	rev = max(rev, resp.Header.GetRevision())
	r.rev = rev
	if changed {
		r.sorted = nil
	}
	r.mu.Unlock()
	if changed {
		r.notify()
	}
}

// eventRevision is the revision of the change ev records (0 if it does not say).
func eventRevision(ev *catalogpb.Event) int64 {
	if rev := ev.GetKv().GetModRevision(); rev > 0 {
		return rev
	}
	if ev.GetType() == catalogpb.Event_PUT {
		return ev.GetInstance().GetModRevision()
	}
	return 0
}

// applyEvent applies ev to the instances and reports whether they changed.
// A listing read in pages may hold an instance newer than an event replayed
// after it; such an event is skipped.
func (r *Resolver) applyEvent(ev *catalogpb.Event) bool {
	switch ev.GetKind() {
	case "service":
		if ev.GetType() != catalogpb.Event_DELETE || !r.ownService(ev.GetService().GetName(), ev.GetPrevService().GetName(), string(ev.GetKv().GetKey())) {
			return false
		}
		// A deleted service takes its instances with it.
		changed := len(r.instances) > 0
		clear(r.instances)
		return changed
	case "instance":
	default:
		return false
	}
	service, id := instanceKey(ev)
	if service != r.service || id == "" {
		return false
	}
	rev := eventRevision(ev)
	old, exists := r.instances[id]
	if exists && rev > 0 && rev < old.GetModRevision() {
		return false
	}
	if ev.GetType() == catalogpb.Event_DELETE {
		if !exists {
			return false
		}
		delete(r.instances, id)
		return true
	}
	inst := ev.GetInstance()
	if inst == nil {
		return false
	}
	r.instances[id] = inst
	return true
}

func (r *Resolver) ownService(names ...string) bool {
	for _, n := range names {
		if n != "" {
			return n == r.service
		}
	}
	return false
}

// instanceKey returns the service and id an instance event is about: from
// the instance it carries, or its logical key "service/id".
func instanceKey(ev *catalogpb.Event) (service, id string) {
	for _, inst := range []*catalogpb.Instance{ev.GetInstance(), ev.GetPrevInstance()} {
		if inst.GetId() != "" {
			return inst.GetService(), inst.GetId()
		}
	}
	service, id, _ = strings.Cut(string(ev.GetKv().GetKey()), "/")
	return service, id
}
