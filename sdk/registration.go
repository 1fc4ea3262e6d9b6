package sdk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/protobuf/proto"
)

// DefaultRegistrationTTL is the TTL of the lease Register grants when no
// WithTTL is given.
const DefaultRegistrationTTL = 10 * time.Second

// An Instance is what Register registers: one instance of a service.
type Instance struct {
	// Service is the service's name: 1..63 of a-z, 0-9 and '-'.
	Service string
	// ID is unique in the service: 1..128 of A-Z, a-z, 0-9, '.', '_', ':', '-'.
	ID string
	// Address is host:port.
	Address string
	// Ports are named extra ports ("http" → 8080).
	Ports    map[string]int32
	Tags     []string
	Metadata map[string]string
	Zone     string
	// Weight for load balancing, 1..1000 (0 means 1).
	Weight int32
	// Check, if set, asks the servers to probe the instance.
	Check *catalogpb.HealthCheck
}

// proto returns inst as the wire message, sharing nothing with inst.
func (inst Instance) proto() *catalogpb.Instance {
	pb := &catalogpb.Instance{
		Service:  inst.Service,
		Id:       inst.ID,
		Address:  inst.Address,
		Ports:    maps.Clone(inst.Ports),
		Tags:     slices.Clone(inst.Tags),
		Metadata: maps.Clone(inst.Metadata),
		Zone:     inst.Zone,
		Weight:   inst.Weight,
	}
	if inst.Check != nil {
		pb.Check = proto.Clone(inst.Check).(*catalogpb.HealthCheck)
	}
	return pb
}

// A RegisterOption changes how Register keeps an instance registered.
type RegisterOption func(*registerSettings)

type registerSettings struct {
	ttl, healthInterval time.Duration
	ttlSet              bool
	state               catalogpb.InstanceState
	healthFunc          func(context.Context) (catalogpb.HealthStatus, string)
	drain               time.Duration
	drainSet            bool
	existingLease       int64
	// retryMin and retryMax bound the wait between attempts to register
	// again after the lease was lost (tests shorten them).
	retryMin, retryMax time.Duration
}

// WithTTL sets the TTL of the lease Register grants (default
// DefaultRegistrationTTL): how long the instance outlives its process. The
// servers bound it (the error says how); it is rounded up to whole seconds.
func WithTTL(ttl time.Duration) RegisterOption {
	return func(s *registerSettings) { s.ttl, s.ttlSet = ttl, true }
}

// WithState sets the state the instance registers in (default SERVING);
// SetState changes it later.
func WithState(state catalogpb.InstanceState) RegisterOption {
	return func(s *registerSettings) { s.state = state }
}

// WithHealthCheckFunc makes the Registration call check every interval (with
// a timeout of interval) and report its health to the servers when the status
// it returns changes. It is also called once before the instance registers.
func WithHealthCheckFunc(interval time.Duration, check func(ctx context.Context) (catalogpb.HealthStatus, string)) RegisterOption {
	return func(s *registerSettings) { s.healthInterval, s.healthFunc = interval, check }
}

// WithDrain makes Close set the instance DRAINING, wait d (or until Close's
// context ends) so clients move away, and only then deregister it.
func WithDrain(d time.Duration) RegisterOption {
	return func(s *registerSettings) { s.drain, s.drainSet = d, true }
}

// WithExistingLease attaches the instance to lease id, which the caller
// owns: the Registration neither keeps it alive nor revokes it, and when the
// lease is lost the instance goes with it (the caller registers again).
// Without it, Register grants a lease of its own and re-registers on a new
// one when that lease is lost.
func WithExistingLease(id int64) RegisterOption {
	return func(s *registerSettings) { s.existingLease = id }
}

func newRegisterSettings(opts []RegisterOption) (registerSettings, error) {
	s := registerSettings{
		ttl:      DefaultRegistrationTTL,
		state:    catalogpb.InstanceState_STATE_SERVING,
		retryMin: 100 * time.Millisecond,
		retryMax: 2 * time.Second,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(&s)
		}
	}
	switch {
	case s.ttl <= 0:
		return s, fmt.Errorf("%w: WithTTL: the TTL must be positive, got %v", ErrInvalidArgument, s.ttl)
	case s.ttlSet && s.existingLease != 0:
		return s, fmt.Errorf("%w: WithTTL and WithExistingLease exclude each other: an existing lease has its own TTL", ErrInvalidArgument)
	case s.existingLease < 0:
		return s, fmt.Errorf("%w: WithExistingLease: lease id must be positive, got %d", ErrInvalidArgument, s.existingLease)
	case s.state < catalogpb.InstanceState_STATE_STARTING || s.state > catalogpb.InstanceState_STATE_STOPPED:
		return s, fmt.Errorf("%w: WithState: state must be STATE_STARTING, STATE_SERVING, STATE_DRAINING or STATE_STOPPED, got %v", ErrInvalidArgument, s.state)
	case s.healthFunc != nil && s.healthInterval <= 0:
		return s, fmt.Errorf("%w: WithHealthCheckFunc: interval must be positive, got %v", ErrInvalidArgument, s.healthInterval)
	case s.healthFunc == nil && s.healthInterval != 0:
		return s, fmt.Errorf("%w: WithHealthCheckFunc: the check function is nil", ErrInvalidArgument)
	case s.drain < 0:
		return s, fmt.Errorf("%w: WithDrain: the drain time must be >= 0, got %v", ErrInvalidArgument, s.drain)
	}
	return s, nil
}

func validHealth(h catalogpb.HealthStatus) bool {
	return h == catalogpb.HealthStatus_PASSING || h == catalogpb.HealthStatus_WARNING || h == catalogpb.HealthStatus_CRITICAL
}

// leaseKeeper is a running keep-alive: *KeepAlive, or a fake in tests.
type leaseKeeper interface {
	Done() <-chan struct{}
	Err() error
	Stop()
}

// registrar is what a Registration calls: the Client, or a fake in tests.
type registrar interface {
	grant(ctx context.Context, ttl time.Duration) (int64, error)
	keepAlive(ctx context.Context, id int64) (leaseKeeper, error)
	revoke(ctx context.Context, id int64) error
	register(ctx context.Context, inst *catalogpb.Instance) (*catalogpb.Instance, error)
	deregister(ctx context.Context, service, id string) error
	setState(ctx context.Context, service, id string, s catalogpb.InstanceState) (*catalogpb.Instance, error)
	setHealth(ctx context.Context, service, id string, h catalogpb.HealthStatus, output string) (*catalogpb.Instance, error)
	closed() bool
}

type clientRegistrar struct{ c *Client }

func (r clientRegistrar) grant(ctx context.Context, ttl time.Duration) (int64, error) {
	resp, err := r.c.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	return resp.GetId(), nil
}

func (r clientRegistrar) keepAlive(ctx context.Context, id int64) (leaseKeeper, error) {
	ka, err := r.c.KeepAlive(ctx, id)
	if err != nil {
		return nil, err
	}
	return ka, nil
}

func (r clientRegistrar) revoke(ctx context.Context, id int64) error {
	_, err := r.c.Revoke(ctx, id)
	return err
}

func (r clientRegistrar) register(ctx context.Context, inst *catalogpb.Instance) (*catalogpb.Instance, error) {
	resp, err := r.c.RegisterInstance(ctx, inst)
	return resp.GetInstance(), err
}

func (r clientRegistrar) deregister(ctx context.Context, service, id string) error {
	_, err := r.c.Deregister(ctx, service, id)
	return err
}

func (r clientRegistrar) setState(ctx context.Context, service, id string, s catalogpb.InstanceState) (*catalogpb.Instance, error) {
	resp, err := r.c.SetInstanceState(ctx, service, id, s)
	return resp.GetInstance(), err
}

func (r clientRegistrar) setHealth(ctx context.Context, service, id string, h catalogpb.HealthStatus, output string) (*catalogpb.Instance, error) {
	resp, err := r.c.SetInstanceHealth(ctx, service, id, h, output)
	return resp.GetInstance(), err
}

func (r clientRegistrar) closed() bool { return r.c.isClosed() }

// A Registration keeps one instance registered until Close: it keeps its
// lease alive, registers the instance again on a new lease when the lease is
// lost (a server restart, a partition that outlasted the TTL), reports health
// and state changes, and deregisters (after draining, if asked) on Close. It
// is safe for concurrent use.
type Registration struct {
	b        registrar
	settings registerSettings

	// opMu orders this registration's writes: a re-registration and a
	// SetState never interleave, so the state asked last is the one stored.
	opMu sync.Mutex

	mu sync.Mutex
	// spec is what to register: the caller's instance with the state asked
	// last (no lease).
	spec *catalogpb.Instance
	// health and output are the health asked last; HEALTH_UNSPECIFIED
	// leaves the servers' default.
	health catalogpb.HealthStatus
	output string
	// inst is the instance as the servers last answered it.
	inst    *catalogpb.Instance
	lease   int64
	keeper  leaseKeeper
	reregs  int64
	lastErr error

	// keeperSince is when the current keep-alive started and kaRestarts
	// how many times in a row it was started again without the lease being
	// lost (run's goroutine only, and establish under opMu).
	keeperSince time.Time
	kaRestarts  int

	reregC chan struct{}
	// loopCtx ends when Close starts: the health loop and re-registration
	// stop. leaseCtx ends when Close is done: the keep-alive lasts the drain.
	loopCtx     context.Context
	loopCancel  context.CancelFunc
	leaseCtx    context.Context
	leaseCancel context.CancelFunc
	donec       chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

// Register registers inst and keeps it registered until Close (see
// Registration). Without WithExistingLease it grants a lease (WithTTL) that
// the instance lives by. ctx bounds the first registration only: the
// Registration runs until Close. On failure nothing is left behind (the
// granted lease is revoked).
func (c *Client) Register(ctx context.Context, inst Instance, opts ...RegisterOption) (*Registration, error) {
	return register(ctx, clientRegistrar{c}, inst, opts)
}

func register(ctx context.Context, b registrar, inst Instance, opts []RegisterOption) (*Registration, error) {
	s, err := newRegisterSettings(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case inst.Service == "":
		return nil, fmt.Errorf("%w: Instance.Service is empty: want a service name of 1..63 characters of a-z, 0-9 and '-'", ErrInvalidArgument)
	case inst.ID == "":
		return nil, fmt.Errorf("%w: Instance.ID of %s is empty: want 1..128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'", ErrInvalidArgument, inst.Service)
	case inst.Address == "":
		return nil, fmt.Errorf("%w: Instance.Address of %s/%s is empty: want host:port", ErrInvalidArgument, inst.Service, inst.ID)
	}
	spec := inst.proto()
	spec.State = s.state
	r := &Registration{
		b:        b,
		settings: s,
		spec:     spec,
		reregC:   make(chan struct{}, 1),
		donec:    make(chan struct{}),
	}
	r.loopCtx, r.loopCancel = context.WithCancel(context.Background())
	r.leaseCtx, r.leaseCancel = context.WithCancel(context.Background())
	if s.healthFunc != nil {
		r.health, r.output = r.runCheck(ctx)
	}
	r.opMu.Lock()
	err = r.establish(ctx)
	r.opMu.Unlock()
	if err != nil {
		r.loopCancel()
		r.leaseCancel()
		return nil, err
	}
	go r.run()
	return r, nil
}

// Instance returns the instance as the servers last answered it.
func (r *Registration) Instance() *catalogpb.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.Clone(r.inst).(*catalogpb.Instance)
}

// Lease returns the lease the instance lives by now (it changes when the
// instance registers again after losing its lease).
func (r *Registration) Lease() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Reregistrations returns how many times the instance was registered again
// on a new lease after losing one.
func (r *Registration) Reregistrations() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reregs
}

// Reregistered receives a value after the instance registered again on a new
// lease (several re-registrations may share one value).
func (r *Registration) Reregistered() <-chan struct{} { return r.reregC }

// Err returns why the instance is not registered now: the last failure of
// registering it again after its lease was lost, or nil.
func (r *Registration) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// SetHealth sets the instance's health. It is also kept for re-registrations:
// an instance registered again gets the health set last.
func (r *Registration) SetHealth(ctx context.Context, h catalogpb.HealthStatus, output string) error {
	if !validHealth(h) {
		return fmt.Errorf("%w: health must be PASSING, WARNING or CRITICAL, got %v", ErrInvalidArgument, h)
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	r.health, r.output = h, output
	service, id := r.spec.GetService(), r.spec.GetId()
	r.mu.Unlock()
	inst, err := r.b.setHealth(ctx, service, id, h, output)
	if err != nil {
		return err
	}
	r.setInstance(inst)
	return nil
}

// SetState sets the instance's lifecycle state. It is also kept for
// re-registrations.
func (r *Registration) SetState(ctx context.Context, s catalogpb.InstanceState) error {
	if s < catalogpb.InstanceState_STATE_STARTING || s > catalogpb.InstanceState_STATE_STOPPED {
		return fmt.Errorf("%w: state must be STATE_STARTING, STATE_SERVING, STATE_DRAINING or STATE_STOPPED, got %v", ErrInvalidArgument, s)
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	r.spec.State = s
	service, id := r.spec.GetService(), r.spec.GetId()
	r.mu.Unlock()
	inst, err := r.b.setState(ctx, service, id, s)
	if err != nil {
		return err
	}
	r.setInstance(inst)
	return nil
}

// Close stops keeping the instance registered and removes it: with WithDrain
// it sets it DRAINING and waits first. It deregisters the instance and
// revokes the lease it granted. If ctx ends first the rest is not done: the
// instance expires with its lease, which is no longer kept alive. Close
// returns the same answer when called again.
func (r *Registration) Close(ctx context.Context) error {
	r.closeOnce.Do(func() { r.closeErr = r.close(ctx) })
	return r.closeErr
}

func (r *Registration) close(ctx context.Context) error {
	r.loopCancel()
	<-r.donec
	defer r.leaseCancel()

	r.mu.Lock()
	service, id := r.spec.GetService(), r.spec.GetId()
	lease, keeper := r.lease, r.keeper
	r.mu.Unlock()
	stopKeepAlive := sync.OnceFunc(func() {
		if keeper != nil {
			keeper.Stop()
		}
	})
	defer stopKeepAlive()

	var errs []error
	if r.settings.drainSet {
		if _, err := r.b.setState(ctx, service, id, catalogpb.InstanceState_STATE_DRAINING); err != nil && !errors.Is(err, ErrInstanceNotFound) {
			errs = append(errs, fmt.Errorf("set %s/%s draining: %w", service, id, err))
		}
		if err := sleepCtx(ctx, r.settings.drain); err != nil {
			return errors.Join(append(errs, fmt.Errorf("drain %s/%s: %w", service, id, err))...)
		}
	}
	if err := r.b.deregister(ctx, service, id); err != nil && !errors.Is(err, ErrInstanceNotFound) {
		errs = append(errs, fmt.Errorf("deregister %s/%s: %w", service, id, err))
	}
	stopKeepAlive()
	if r.settings.existingLease == 0 && lease != 0 {
		if err := r.b.revoke(ctx, lease); err != nil && !errors.Is(err, ErrLeaseNotFound) {
			errs = append(errs, fmt.Errorf("revoke lease %d of %s/%s: %w", lease, service, id, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Registration) setInstance(inst *catalogpb.Instance) {
	if inst == nil {
		return
	}
	r.mu.Lock()
	r.inst = inst
	r.mu.Unlock()
}

// establish registers the instance, on a new lease unless the caller gave
// one, with the state and health asked last. On failure it revokes the lease
// it granted. The caller holds opMu.
func (r *Registration) establish(ctx context.Context) error {
	lease := r.settings.existingLease
	var keeper leaseKeeper
	if lease == 0 {
		id, err := r.b.grant(ctx, r.settings.ttl)
		if err != nil {
			return fmt.Errorf("grant a lease for %s/%s: %w", r.spec.GetService(), r.spec.GetId(), err)
		}
		lease = id
		keeper, err = r.b.keepAlive(r.leaseCtx, id)
		if err != nil {
			r.abandon(id, nil)
			return fmt.Errorf("keep lease %d alive: %w", id, err)
		}
	}
	r.mu.Lock()
	spec := proto.Clone(r.spec).(*catalogpb.Instance)
	health, output := r.health, r.output
	r.mu.Unlock()
	spec.Lease = lease

	inst, err := r.b.register(ctx, spec)
	if err == nil && health != catalogpb.HealthStatus_HEALTH_UNSPECIFIED && inst.GetHealth() != health {
		inst, err = r.b.setHealth(ctx, spec.GetService(), spec.GetId(), health, output)
	}
	if err != nil {
		if keeper != nil {
			r.abandon(lease, keeper)
		}
		return fmt.Errorf("register %s/%s on lease %d: %w", spec.GetService(), spec.GetId(), lease, err)
	}
	r.mu.Lock()
	r.inst, r.lease, r.keeper, r.lastErr = inst, lease, keeper, nil
	r.mu.Unlock()
	r.keeperSince, r.kaRestarts = time.Now(), 0
	return nil
}

// abandon stops keeping a lease granted for a failed registration alive and
// revokes it, so nothing is left behind.
func (r *Registration) abandon(lease int64, keeper leaseKeeper) {
	if keeper != nil {
		keeper.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.b.revoke(ctx, lease)
}

// run checks health every interval and registers the instance again when
// its lease is lost, until Close.
func (r *Registration) run() {
	defer close(r.donec)
	var tick <-chan time.Time
	if r.settings.healthFunc != nil {
		ticker := time.NewTicker(r.settings.healthInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		var lost <-chan struct{}
		r.mu.Lock()
		if r.keeper != nil {
			lost = r.keeper.Done()
		}
		r.mu.Unlock()
		select {
		case <-r.loopCtx.Done():
			return
		case <-tick:
			r.checkHealth()
		case <-lost:
			r.recover()
		}
	}
}

// runCheck calls the health function under a timeout of its interval. A
// status outside PASSING, WARNING and CRITICAL counts as CRITICAL.
func (r *Registration) runCheck(ctx context.Context) (catalogpb.HealthStatus, string) {
	ctx, cancel := context.WithTimeout(ctx, r.settings.healthInterval)
	defer cancel()
	h, output := r.settings.healthFunc(ctx)
	if !validHealth(h) {
		return catalogpb.HealthStatus_CRITICAL, fmt.Sprintf("health check returned %v, want PASSING, WARNING or CRITICAL", h)
	}
	return h, output
}

// checkHealth runs the health function and reports a status that differs
// from the servers'.
func (r *Registration) checkHealth() {
	h, output := r.runCheck(r.loopCtx)
	if r.loopCtx.Err() != nil {
		return
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	r.health, r.output = h, output
	current := r.inst.GetHealth()
	service, id := r.spec.GetService(), r.spec.GetId()
	r.mu.Unlock()
	if h == current {
		return
	}
	// A failure is retried on the next tick: the servers' health still differs.
	if inst, err := r.b.setHealth(r.loopCtx, service, id, h, output); err == nil {
		r.setInstance(inst)
	}
}

// recover handles the end of the lease's keep-alive: the lease was lost, so
// the instance registers again on a new lease, with backoff, until it works
// or Close. A keep-alive that ended for another reason is started again on
// the same lease first.
func (r *Registration) recover() {
	r.mu.Lock()
	lost := r.keeper
	lease := r.lease
	r.keeper = nil
	r.mu.Unlock()
	kaErr := lost.Err()
	if !errors.Is(kaErr, ErrLeaseNotFound) {
		// Keep-alives that end over and over without losing the lease are
		// started again at a slowing pace.
		if time.Since(r.keeperSince) >= r.settings.ttl {
			r.kaRestarts = 0
		}
		r.kaRestarts++
		if r.kaRestarts > 1 && sleepCtx(r.loopCtx, backoffWait(r.settings.retryMin, r.settings.retryMax, r.kaRestarts-2)) != nil {
			return
		}
	}
	for failures := 0; r.loopCtx.Err() == nil; failures++ {
		if r.b.closed() {
			r.setErr(fmt.Errorf("keep %s/%s registered: the client is closed (keep-alive of lease %d ended: %v)",
				r.spec.GetService(), r.spec.GetId(), lease, kaErr))
			return
		}
		if failures > 0 {
			if sleepCtx(r.loopCtx, backoffWait(r.settings.retryMin, r.settings.retryMax, failures-1)) != nil {
				return
			}
		}
		if kaErr != nil && !errors.Is(kaErr, ErrLeaseNotFound) {
			keeper, err := r.b.keepAlive(r.leaseCtx, lease)
			if err == nil {
				r.mu.Lock()
				r.keeper = keeper
				r.mu.Unlock()
				r.keeperSince = time.Now()
				return
			}
			kaErr = err
			if !errors.Is(err, ErrLeaseNotFound) {
				r.setErr(fmt.Errorf("keep lease %d alive: %w", lease, err))
				continue
			}
		}
		r.opMu.Lock()
		err := r.establish(r.loopCtx)
		r.opMu.Unlock()
		if err == nil {
			r.mu.Lock()
			r.reregs++
			r.mu.Unlock()
			select {
			case r.reregC <- struct{}{}:
			default:
			}
			return
		}
		r.setErr(err)
	}
}

func (r *Registration) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
}
