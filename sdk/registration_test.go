package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/protobuf/proto"
)

// A fakeRegistrar is a registry and lease store in memory, recording every
// call in order.
type fakeRegistrar struct {
	mu        sync.Mutex
	nextLease int64
	leases    map[int64]*fakeKeeper // live leases and their keep-alive, if any
	instances map[string]*catalogpb.Instance
	rev       int64
	ops       []string
	// failures scripts errors by operation name ("grant", "register", ...).
	failures map[string][]error
	isClosed bool
	// keepAliveEnds, if set, ends every keep-alive at once with it.
	keepAliveEnds error
}

func newFakeRegistrar() *fakeRegistrar {
	return &fakeRegistrar{
		nextLease: 100,
		leases:    make(map[int64]*fakeKeeper),
		instances: make(map[string]*catalogpb.Instance),
		failures:  make(map[string][]error),
	}
}

type fakeKeeper struct {
	once  sync.Once
	donec chan struct{}
	err   error
}

func (k *fakeKeeper) end(err error) {
	k.once.Do(func() { k.err = err; close(k.donec) })
}
func (k *fakeKeeper) Done() <-chan struct{} { return k.donec }
func (k *fakeKeeper) Err() error            { return k.err }
func (k *fakeKeeper) Stop()                 { k.end(context.Canceled) }

// fail scripts the next calls of op to fail with errs.
func (f *fakeRegistrar) fail(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[op] = append(f.failures[op], errs...)
}

// opLocked records op and returns its scripted failure, if any.
func (f *fakeRegistrar) opLocked(name, detail string) error {
	f.ops = append(f.ops, strings.TrimSpace(name+" "+detail))
	if errs := f.failures[name]; len(errs) > 0 {
		f.failures[name] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *fakeRegistrar) opList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

func (f *fakeRegistrar) instance(service, id string) *catalogpb.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instances[service+"/"+id]; in != nil {
		return proto.Clone(in).(*catalogpb.Instance)
	}
	return nil
}

// loseLease revokes lease id behind the registration's back, as another
// client or an expiry would: its instances go, its keep-alive ends.
func (f *fakeRegistrar) loseLease(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokeLocked(id)
}

func (f *fakeRegistrar) revokeLocked(id int64) bool {
	k, ok := f.leases[id]
	if !ok {
		return false
	}
	delete(f.leases, id)
	for key, in := range f.instances {
		if in.GetLease() == id {
			delete(f.instances, key)
		}
	}
	if k != nil {
		k.end(ErrLeaseNotFound)
	}
	return true
}

func (f *fakeRegistrar) grant(_ context.Context, ttl time.Duration) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked("grant", ttl.String()); err != nil {
		return 0, err
	}
	f.nextLease++
	f.leases[f.nextLease] = nil
	return f.nextLease, nil
}

func (f *fakeRegistrar) keepAlive(_ context.Context, id int64) (leaseKeeper, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked("keepAlive", fmt.Sprint(id)); err != nil {
		return nil, err
	}
	k := &fakeKeeper{donec: make(chan struct{})}
	if f.keepAliveEnds != nil {
		k.end(f.keepAliveEnds)
		return k, nil
	}
	if _, ok := f.leases[id]; !ok {
		k.end(ErrLeaseNotFound)
		return k, nil
	}
	f.leases[id] = k
	return k, nil
}

func (f *fakeRegistrar) revoke(_ context.Context, id int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked("revoke", fmt.Sprint(id)); err != nil {
		return err
	}
	if !f.revokeLocked(id) {
		return ErrLeaseNotFound
	}
	return nil
}

func (f *fakeRegistrar) register(_ context.Context, in *catalogpb.Instance) (*catalogpb.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked("register", fmt.Sprintf("%s/%s lease=%d state=%v", in.GetService(), in.GetId(), in.GetLease(), in.GetState())); err != nil {
		return nil, err
	}
	if _, ok := f.leases[in.GetLease()]; in.GetLease() != 0 && !ok {
		return nil, ErrLeaseNotFound
	}
	f.rev++
	stored := proto.Clone(in).(*catalogpb.Instance)
	stored.Health = catalogpb.HealthStatus_PASSING
	stored.ModRevision = f.rev
	f.instances[in.GetService()+"/"+in.GetId()] = stored
	return proto.Clone(stored).(*catalogpb.Instance), nil
}

func (f *fakeRegistrar) deregister(_ context.Context, service, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked("deregister", service+"/"+id); err != nil {
		return err
	}
	delete(f.instances, service+"/"+id)
	return nil
}

func (f *fakeRegistrar) update(op, service, id, detail string, change func(*catalogpb.Instance)) (*catalogpb.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.opLocked(op, service+"/"+id+" "+detail); err != nil {
		return nil, err
	}
	in := f.instances[service+"/"+id]
	if in == nil {
		return nil, ErrInstanceNotFound
	}
	f.rev++
	change(in)
	in.ModRevision = f.rev
	return proto.Clone(in).(*catalogpb.Instance), nil
}

func (f *fakeRegistrar) setState(_ context.Context, service, id string, s catalogpb.InstanceState) (*catalogpb.Instance, error) {
	return f.update("setState", service, id, s.String(), func(in *catalogpb.Instance) { in.State = s })
}

func (f *fakeRegistrar) setHealth(_ context.Context, service, id string, h catalogpb.HealthStatus, output string) (*catalogpb.Instance, error) {
	return f.update("setHealth", service, id, h.String()+" "+output, func(in *catalogpb.Instance) {
		in.Health, in.HealthOutput = h, output
	})
}

func (f *fakeRegistrar) closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.isClosed
}

// withRetry shortens the waits between re-registration attempts.
func withRetry(lo, hi time.Duration) RegisterOption {
	return func(s *registerSettings) { s.retryMin, s.retryMax = lo, hi }
}

var testInstance = Instance{
	Service: "orders", ID: "o-1", Address: "10.0.0.1:80",
	Ports: map[string]int32{"http": 8080}, Tags: []string{"v2"}, Metadata: map[string]string{"env": "prod"},
	Zone: "z1", Weight: 5,
}

func mustRegister(t *testing.T, f *fakeRegistrar, opts ...RegisterOption) *Registration {
	t.Helper()
	r, err := register(t.Context(), f, testInstance, append([]RegisterOption{withRetry(time.Millisecond, 5*time.Millisecond)}, opts...))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// waitCond polls cond until it holds, failing the test after waitFor.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitFor)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRegisterOptionsValidated(t *testing.T) {
	check := func(context.Context) (catalogpb.HealthStatus, string) { return catalogpb.HealthStatus_PASSING, "" }
	tests := []struct {
		name    string
		inst    Instance
		opts    []RegisterOption
		wantErr string
	}{
		{"no service", Instance{ID: "a", Address: "h:1"}, nil, "Instance.Service is empty: want a service name of 1..63"},
		{"no id", Instance{Service: "s", Address: "h:1"}, nil, "Instance.ID of s is empty: want 1..128"},
		{"no address", Instance{Service: "s", ID: "a"}, nil, "Instance.Address of s/a is empty: want host:port"},
		{"zero ttl", testInstance, []RegisterOption{WithTTL(0)}, "WithTTL: the TTL must be positive, got 0s"},
		{"ttl and lease", testInstance, []RegisterOption{WithTTL(time.Second), WithExistingLease(3)}, "exclude each other"},
		{"negative lease", testInstance, []RegisterOption{WithExistingLease(-3)}, "lease id must be positive, got -3"},
		{"bad state", testInstance, []RegisterOption{WithState(9)}, "WithState: state must be STATE_STARTING"},
		{"health without interval", testInstance, []RegisterOption{WithHealthCheckFunc(0, check)}, "interval must be positive"},
		{"health without func", testInstance, []RegisterOption{WithHealthCheckFunc(time.Second, nil)}, "check function is nil"},
		{"negative drain", testInstance, []RegisterOption{WithDrain(-time.Second)}, "drain time must be >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistrar()
			_, err := register(t.Context(), f, tt.inst, tt.opts)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("register = %v, want ErrInvalidArgument containing %q", err, tt.wantErr)
			}
			if ops := f.opList(); len(ops) != 0 {
				t.Errorf("refused registration still called %v", ops)
			}
		})
	}
}

func TestRegisterGrantsKeepsAliveAndRegisters(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f, WithTTL(3*time.Second), WithState(catalogpb.InstanceState_STATE_STARTING))

	want := []string{"grant 3s", "keepAlive 101", "register orders/o-1 lease=101 state=STATE_STARTING"}
	if got := f.opList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	stored := f.instance("orders", "o-1")
	wantStored := testInstance.proto()
	wantStored.Lease, wantStored.State, wantStored.Health, wantStored.ModRevision = 101, catalogpb.InstanceState_STATE_STARTING, catalogpb.HealthStatus_PASSING, 1
	if !proto.Equal(stored, wantStored) {
		t.Errorf("stored instance %v, want %v", stored, wantStored)
	}
	if !proto.Equal(r.Instance(), stored) || r.Lease() != 101 {
		t.Errorf("Instance() = %v, Lease() = %d; want the stored instance on lease 101", r.Instance(), r.Lease())
	}

	if err := r.SetState(t.Context(), catalogpb.InstanceState_STATE_SERVING); err != nil {
		t.Fatal(err)
	}
	if err := r.SetHealth(t.Context(), catalogpb.HealthStatus_WARNING, "slow disk"); err != nil {
		t.Fatal(err)
	}
	if got := r.Instance(); got.GetState() != catalogpb.InstanceState_STATE_SERVING || got.GetHealth() != catalogpb.HealthStatus_WARNING {
		t.Errorf("after SetState and SetHealth Instance() = %v", got)
	}
	if err := r.SetHealth(t.Context(), catalogpb.HealthStatus_HEALTH_UNSPECIFIED, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("SetHealth(UNSPECIFIED) = %v, want ErrInvalidArgument", err)
	}
	if err := r.SetState(t.Context(), catalogpb.InstanceState_STATE_UNSPECIFIED); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("SetState(UNSPECIFIED) = %v, want ErrInvalidArgument", err)
	}

	// The caller's Instance is not shared with the registration.
	testInstance.Tags[0] = "changed"
	defer func() { testInstance.Tags[0] = "v2" }()
	if got := r.Instance().GetTags()[0]; got != "v2" {
		t.Errorf("registered tags follow the caller's slice: %q", got)
	}
}

// TestRegisterFailureLeavesNothing: a refused registration revokes the lease
// it granted.
func TestRegisterFailureLeavesNothing(t *testing.T) {
	f := newFakeRegistrar()
	f.fail("register", fmt.Errorf("%w: address must be host:port", ErrInvalidArgument))
	_, err := register(t.Context(), f, testInstance, nil)
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "register orders/o-1 on lease 101") {
		t.Fatalf("register = %v, want the server's ErrInvalidArgument naming the instance and lease", err)
	}
	want := []string{"grant 10s", "keepAlive 101", "register orders/o-1 lease=101 state=STATE_SERVING", "revoke 101"}
	if got := f.opList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("calls = %q, want %q", got, want)
	}

	f = newFakeRegistrar()
	f.fail("grant", fmt.Errorf("%w: TTL must be 2..3600 seconds", ErrTTLOutOfRange))
	if _, err := register(t.Context(), f, testInstance, []RegisterOption{WithTTL(time.Second)}); !errors.Is(err, ErrTTLOutOfRange) {
		t.Fatalf("register with a refused TTL = %v, want ErrTTLOutOfRange", err)
	}
}

// TestReregisterAfterLeaseLoss: when the lease is revoked behind its back the
// registration grants a new one and registers again with the state and
// health set last, retrying failures.
func TestReregisterAfterLeaseLoss(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f)
	if err := r.SetState(t.Context(), catalogpb.InstanceState_STATE_STARTING); err != nil {
		t.Fatal(err)
	}
	if err := r.SetHealth(t.Context(), catalogpb.HealthStatus_WARNING, "warming up"); err != nil {
		t.Fatal(err)
	}
	f.fail("grant", ErrNoLeader)
	f.fail("register", ErrUnavailable)
	before := len(f.opList())
	f.loseLease(101)

	select {
	case <-r.Reregistered():
	case <-time.After(waitFor):
		t.Fatalf("not registered again within %v; Err() = %v", waitFor, r.Err())
	}
	if r.Reregistrations() != 1 || r.Lease() != 103 || r.Err() != nil {
		t.Errorf("Reregistrations %d, Lease %d, Err %v; want 1, 103 (101 lost, 102 abandoned), nil", r.Reregistrations(), r.Lease(), r.Err())
	}
	stored := f.instance("orders", "o-1")
	if stored.GetLease() != 103 || stored.GetState() != catalogpb.InstanceState_STATE_STARTING ||
		stored.GetHealth() != catalogpb.HealthStatus_WARNING || stored.GetHealthOutput() != "warming up" {
		t.Errorf("registered again as %v, want lease 103, STARTING, WARNING warming up", stored)
	}
	want := []string{
		"grant 10s", // refused: no leader
		"grant 10s", "keepAlive 102", "register orders/o-1 lease=102 state=STATE_STARTING", "revoke 102",
		"grant 10s", "keepAlive 103", "register orders/o-1 lease=103 state=STATE_STARTING",
		"setHealth orders/o-1 WARNING warming up",
	}
	if got := f.opList()[before:]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("re-registration calls = %q,\nwant %q", got, want)
	}

	// A second loss is handled the same way.
	f.loseLease(103)
	waitCond(t, "second re-registration", func() bool { return r.Reregistrations() == 2 })
	if f.instance("orders", "o-1").GetLease() != r.Lease() {
		t.Errorf("stored lease %d, Lease() %d", f.instance("orders", "o-1").GetLease(), r.Lease())
	}
}

// TestKeepAliveEndedForAnotherReason: a keep-alive that ends without the
// lease being lost is started again on the same lease.
func TestKeepAliveEndedForAnotherReason(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f)
	f.mu.Lock()
	k := f.leases[101]
	f.mu.Unlock()
	k.end(ErrUnavailable)
	waitCond(t, "keep-alive restarted", func() bool {
		ops := f.opList()
		return ops[len(ops)-1] == "keepAlive 101"
	})
	if r.Lease() != 101 || r.Reregistrations() != 0 {
		t.Errorf("Lease %d, Reregistrations %d; want the same lease 101, none", r.Lease(), r.Reregistrations())
	}
}

// TestKeepAliveRestartsArePaced: keep-alives that keep ending at once are
// not started again in a busy loop.
func TestKeepAliveRestartsArePaced(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f, withRetry(time.Millisecond, 10*time.Millisecond))
	f.mu.Lock()
	f.keepAliveEnds = ErrUnavailable
	k := f.leases[101]
	f.mu.Unlock()
	k.end(ErrUnavailable)
	time.Sleep(100 * time.Millisecond)
	n := 0
	for _, op := range f.opList() {
		if op == "keepAlive 101" {
			n++
		}
	}
	// Unpaced, it would be tens of thousands; paced, at most 100ms / 10ms
	// plus the ramp.
	if n < 2 || n > 30 {
		t.Errorf("keep-alive started %d times in 100ms, want a few (paced, up to 10ms apart)", n)
	}
	if r.Lease() != 101 || r.Reregistrations() != 0 {
		t.Errorf("Lease %d, Reregistrations %d; the lease was never lost", r.Lease(), r.Reregistrations())
	}
}

func TestHealthCheckFuncReportsChangesOnly(t *testing.T) {
	f := newFakeRegistrar()
	var mu sync.Mutex
	results := []catalogpb.HealthStatus{
		catalogpb.HealthStatus_CRITICAL, // before registering
		catalogpb.HealthStatus_CRITICAL,
		catalogpb.HealthStatus_PASSING,
		catalogpb.HealthStatus_PASSING,
		catalogpb.HealthStatus_HEALTH_UNSPECIFIED, // invalid: counts as critical
	}
	calls := 0
	check := func(ctx context.Context) (catalogpb.HealthStatus, string) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if len(results) == 0 {
			return catalogpb.HealthStatus_CRITICAL, "check " + fmt.Sprint(calls)
		}
		h := results[0]
		results = results[1:]
		return h, "check " + fmt.Sprint(calls)
	}
	r := mustRegister(t, f, WithHealthCheckFunc(2*time.Millisecond, check))
	if got := f.instance("orders", "o-1"); got.GetHealth() != catalogpb.HealthStatus_CRITICAL || got.GetHealthOutput() != "check 1" {
		t.Errorf("registered with health %v %q, want CRITICAL from the first check", got.GetHealth(), got.GetHealthOutput())
	}
	waitCond(t, "checks run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 8
	})
	r.Close(t.Context())
	var health []string
	for _, op := range f.opList() {
		if strings.HasPrefix(op, "setHealth") {
			health = append(health, op)
		}
	}
	want := []string{
		"setHealth orders/o-1 CRITICAL check 1",
		"setHealth orders/o-1 PASSING check 3",
		"setHealth orders/o-1 CRITICAL health check returned HEALTH_UNSPECIFIED, want PASSING, WARNING or CRITICAL",
	}
	if fmt.Sprint(health) != fmt.Sprint(want) {
		t.Errorf("health reports %q,\nwant %q", health, want)
	}
}

func TestCloseDeregistersAndRevokes(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f)
	if err := r.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ops := f.opList()
	if want := []string{"deregister orders/o-1", "revoke 101"}; fmt.Sprint(ops[3:]) != fmt.Sprint(want) {
		t.Errorf("Close calls %q, want %q", ops[3:], want)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if n := len(f.opList()); n != len(ops) {
		t.Errorf("second Close called the servers again")
	}
	// After Close, a lost lease is not recovered.
	f.loseLease(101)
	time.Sleep(20 * time.Millisecond)
	if r.Reregistrations() != 0 {
		t.Errorf("a closed registration registered again")
	}
}

func TestCloseDrainsFirst(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f, WithDrain(30*time.Millisecond))
	start := time.Now()
	if err := r.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Close returned after %v, before the 30ms drain", d)
	}
	ops := f.opList()
	want := []string{"setState orders/o-1 STATE_DRAINING", "deregister orders/o-1", "revoke 101"}
	if fmt.Sprint(ops[3:]) != fmt.Sprint(want) {
		t.Errorf("Close calls %q, want %q", ops[3:], want)
	}

	// A context that ends during the drain stops Close there: the lease,
	// no longer kept alive, will take the instance.
	f = newFakeRegistrar()
	r = mustRegister(t, f, WithDrain(time.Hour))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close cut during the drain = %v, want DeadlineExceeded", err)
	}
	f.mu.Lock()
	k := f.leases[101]
	f.mu.Unlock()
	select {
	case <-k.Done():
	default:
		t.Errorf("the keep-alive still runs after Close")
	}
}

func TestExistingLeaseIsTheCallers(t *testing.T) {
	f := newFakeRegistrar()
	lease, _ := f.grant(t.Context(), time.Minute)
	r := mustRegister(t, f, WithExistingLease(lease))
	if r.Lease() != lease || f.instance("orders", "o-1").GetLease() != lease {
		t.Errorf("registered on lease %d, want %d", f.instance("orders", "o-1").GetLease(), lease)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []string{"grant 1m0s", "register orders/o-1 lease=101 state=STATE_SERVING", "deregister orders/o-1"}
	if got := f.opList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("calls %q, want %q (no keep-alive, no revoke)", got, want)
	}
}

// TestCloseStopsReregistering: Close during failing re-registrations ends
// them and returns.
func TestCloseStopsReregistering(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f)
	f.fail("grant", ErrNoLeader, ErrNoLeader, ErrNoLeader, ErrNoLeader, ErrNoLeader, ErrNoLeader, ErrNoLeader, ErrNoLeader)
	f.loseLease(101)
	waitCond(t, "re-registration failing", func() bool { return errors.Is(r.Err(), ErrNoLeader) })
	if err := r.Close(t.Context()); err != nil {
		t.Errorf("Close = %v, want nil (lease and instance already gone)", err)
	}
	n := len(f.opList())
	time.Sleep(20 * time.Millisecond)
	if len(f.opList()) != n {
		t.Errorf("calls after Close: %q", f.opList()[n:])
	}
}

func TestClosedClientStopsReregistering(t *testing.T) {
	f := newFakeRegistrar()
	r := mustRegister(t, f)
	f.mu.Lock()
	f.isClosed = true
	f.mu.Unlock()
	f.loseLease(101)
	waitCond(t, "closed client reported", func() bool { return r.Err() != nil })
	if !strings.Contains(r.Err().Error(), "client is closed") {
		t.Errorf("Err() = %v, want it to say the client is closed", r.Err())
	}
}
