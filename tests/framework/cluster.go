package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/server"
)

const (
	// launchAttempts is how often NewCluster picks fresh ports when a port it
	// chose was taken between choosing and binding it.
	launchAttempts = 3
	// defaultWait bounds WaitLeader when its context has no deadline, and
	// NewCluster's wait for the first leader.
	defaultWait = 20 * time.Second
	// restartPortWait is how long Restart retries a member whose port is
	// briefly held by someone else before failing the test.
	restartPortWait = 5 * time.Second
	// killHandoverWait bounds the leadership handover of a killed member
	// (its links are cut, so it cannot succeed) and of members stopped all
	// together (nobody is left to take over).
	killHandoverWait = 100 * time.Millisecond
)

// An Option changes the configuration of every member of a cluster.
type Option func(*tuning)

// tuning holds the server settings a test may change; every member of a
// cluster has the same.
type tuning struct {
	tickInterval   time.Duration
	electionTicks  int
	snapshotCount  uint64
	catchUpEntries uint64
	requestTimeout time.Duration
}

// WithSnapshotCount makes members snapshot and compact their raft log every n
// applied entries (server default 10000).
func WithSnapshotCount(n uint64) Option {
	return func(c *tuning) { c.snapshotCount = n }
}

// WithCatchUpEntries sets how many entries the log keeps after a snapshot
// (server default 5000): a follower further behind needs the database.
func WithCatchUpEntries(n uint64) Option {
	return func(c *tuning) { c.catchUpEntries = n }
}

// WithTickInterval sets the raft tick (server default 100ms); elections take
// ElectionTicks to 2×ElectionTicks ticks.
func WithTickInterval(d time.Duration) Option {
	return func(c *tuning) { c.tickInterval = d }
}

// WithElectionTicks sets how many ticks without a leader start an election
// (server default 10).
func WithElectionTicks(n int) Option {
	return func(c *tuning) { c.electionTicks = n }
}

// WithRequestTimeout sets how long a member waits for a request whose caller
// set no deadline (server default 5s).
func WithRequestTimeout(d time.Duration) Option {
	return func(c *tuning) { c.requestTimeout = d }
}

// A Cluster is a catalogd cluster run for one test. Members are numbered
// 0..Size()-1; the number of a member never changes, whatever its raft role.
type Cluster struct {
	t        testing.TB
	launcher launcher
	faults   *faultTable
	specs    []memberSpec
	logs     []*memberLog

	mu      sync.Mutex
	members []member // nil while a member is stopped
	ids     []uint64 // known from a member's first launch on
	status  *sdk.Client
}

// NewCluster starts a cluster of n members in this process and returns once
// they agree on a leader. Everything is stopped when the test ends; if it
// failed, the end of each member's log is printed.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("framework: a cluster needs at least 1 member, got %d", n)
	}
	defaults := server.DefaultConfig()
	cfg := tuning{
		tickInterval:   defaults.TickInterval,
		electionTicks:  defaults.ElectionTicks,
		snapshotCount:  defaults.SnapshotCount,
		catchUpEntries: defaults.CatchUpEntries,
		requestTimeout: defaults.RequestTimeout,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	c := &Cluster{
		t:        t,
		launcher: inProcess{},
		faults:   newFaultTable(),
		members:  make([]member, n),
		ids:      make([]uint64, n),
	}
	for range n {
		c.logs = append(c.logs, newMemberLog())
	}
	t.Cleanup(c.cleanup)

	var errs []error
	for range launchAttempts {
		specs, err := c.plan(n, cfg)
		if err != nil {
			t.Fatalf("framework: %v", err)
		}
		c.specs = specs
		err = c.launchAll()
		if err == nil {
			ctx, cancel := context.WithTimeout(t.Context(), defaultWait)
			defer cancel()
			c.WaitLeader(ctx)
			return c
		}
		// Most likely a port was taken between choosing and binding it; the
		// peer addresses are part of the members' identity, so start over.
		errs = append(errs, err)
		c.StopAll()
	}
	t.Fatalf("framework: could not start a %d-member cluster in %d attempts: %v", n, launchAttempts, errors.Join(errs...))
	return nil
}

// plan chooses names, data dirs and free loopback ports for n members.
func (c *Cluster) plan(n int, cfg tuning) ([]memberSpec, error) {
	addrs, err := freeAddrs(3 * n)
	if err != nil {
		return nil, err
	}
	specs := make([]memberSpec, n)
	peers := make([]string, n)
	for i := range specs {
		specs[i] = memberSpec{
			index:      i,
			name:       fmt.Sprintf("m%d", i),
			dataDir:    filepath.Join(c.t.TempDir(), fmt.Sprintf("m%d", i)),
			clientAddr: addrs[3*i],
			peerAddr:   addrs[3*i+1],
			httpAddr:   addrs[3*i+2],
			tuning:     cfg,
			logger:     c.logs[i].logger(),
			faults:     c.faults,
		}
		peers[i] = specs[i].name + "=" + specs[i].peerAddr
	}
	for i := range specs {
		specs[i].initialCluster = strings.Join(peers, ",")
	}
	return specs, nil
}

// freeAddrs returns n distinct loopback addresses that were free a moment ago.
// They are chosen before start because every member's --initial-cluster must
// name every peer address.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("choose a free loopback port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

func (c *Cluster) launchAll() error {
	for i := range c.specs {
		if err := c.launch(i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) launch(i int) error {
	m, err := c.launcher.launch(c.specs[i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[i] = m
	c.ids[i] = m.id()
	return nil
}

func (c *Cluster) cleanup() {
	c.StopAll()
	c.mu.Lock()
	if c.status != nil {
		c.status.Close()
	}
	c.mu.Unlock()
	if c.t.Failed() {
		for i, l := range c.logs {
			lines := l.tail()
			c.t.Logf("--- log of member %d (%s), last %d lines ---\n%s", i, c.Name(i), len(lines), strings.Join(lines, "\n"))
		}
	}
}

func (c *Cluster) check(i int) {
	c.t.Helper()
	if i < 0 || i >= len(c.specs) {
		c.t.Fatalf("framework: no member %d: the cluster has members 0..%d", i, len(c.specs)-1)
	}
}

// Size returns the number of members, running or not.
func (c *Cluster) Size() int { return len(c.specs) }

// Name returns member i's name.
func (c *Cluster) Name(i int) string { c.check(i); return c.specs[i].name }

// ClientAddr returns member i's gRPC address (the same across restarts).
func (c *Cluster) ClientAddr(i int) string { c.check(i); return c.specs[i].clientAddr }

// PeerAddr returns member i's raft peer address.
func (c *Cluster) PeerAddr(i int) string { c.check(i); return c.specs[i].peerAddr }

// HTTPAddr returns member i's HTTP address.
func (c *Cluster) HTTPAddr(i int) string { c.check(i); return c.specs[i].httpAddr }

// ID returns member i's raft id.
func (c *Cluster) ID(i int) uint64 {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[i]
}

// IndexOf returns the number of the member with raft id id, or -1.
func (c *Cluster) IndexOf(id uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		return -1
	}
	return slices.Index(c.ids, id)
}

// Running reports whether member i is running.
func (c *Cluster) Running(i int) bool {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i] != nil
}

// RunningMembers returns the numbers of the running members.
func (c *Cluster) RunningMembers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var running []int
	for i, m := range c.members {
		if m != nil {
			running = append(running, i)
		}
	}
	return running
}

// Others returns the numbers of every member except the given ones.
func (c *Cluster) Others(except ...int) []int {
	var others []int
	for i := range c.specs {
		if !slices.Contains(except, i) {
			others = append(others, i)
		}
	}
	return others
}

// Endpoints returns the client addresses of the given members (all if none).
func (c *Cluster) Endpoints(members ...int) []string {
	c.t.Helper()
	if len(members) == 0 {
		members = c.Others()
	}
	eps := make([]string, len(members))
	for k, i := range members {
		eps[k] = c.ClientAddr(i)
	}
	return eps
}

// Logged returns how many log records member i has written with message msg
// (at level Info or above, over all its restarts). Scenarios use it to tell
// which path the server took, for example "restored snapshot".
func (c *Cluster) Logged(i int, msg string) int {
	c.check(i)
	return c.logs[i].logged(msg)
}

// Stop stops member i gracefully: a leader hands leadership over first.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.take(i)
	m.stop(context.Background())
}

// Kill stops member i as abruptly as an in-process member can be stopped:
// its links are cut first, so it leaves without handing leadership over and
// the others must notice its absence and elect a leader themselves. Its data
// is still closed cleanly. The links it had are restored once it is down, so
// a Restart finds the network as the test left it.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.take(i)
	saved := c.faults.links(i)
	c.faults.isolate(i, len(c.specs))
	ctx, cancel := context.WithTimeout(context.Background(), killHandoverWait)
	defer cancel()
	m.stop(ctx)
	c.faults.healMember(i)
	c.faults.restore(saved)
}

// take marks member i stopped and returns it for stopping.
func (c *Cluster) take(i int) member {
	c.t.Helper()
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m == nil {
		c.t.Fatalf("framework: member %d (%s) is already stopped", i, c.specs[i].name)
	}
	c.members[i] = nil
	return m
}

// StopAll stops every running member, concurrently. A leader going down with
// everyone else does not wait to hand leadership over: the members it could
// hand it to are stopping too.
func (c *Cluster) StopAll() {
	c.mu.Lock()
	var running []member
	for i, m := range c.members {
		if m != nil {
			running = append(running, m)
			c.members[i] = nil
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), killHandoverWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range running {
		wg.Go(func() { m.stop(ctx) })
	}
	wg.Wait()
}

// Restart starts the stopped member i again with the same name, addresses
// and data dir. It returns without waiting for a leader.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.check(i)
	if c.Running(i) {
		c.t.Fatalf("framework: member %d (%s) is running: stop it before restarting it", i, c.specs[i].name)
	}
	deadline := time.Now().Add(restartPortWait)
	for {
		err := c.launch(i)
		if err == nil {
			return
		}
		if !errors.Is(err, server.ErrAddrInUse) || time.Now().After(deadline) {
			c.t.Fatalf("framework: restart member %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RestartAll restarts every stopped member. It returns without waiting for
// a leader.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	for i := range c.specs {
		if !c.Running(i) {
			c.Restart(i)
		}
	}
}

// Cut drops raft messages between members i and j, both ways. Clients still
// reach both.
func (c *Cluster) Cut(i, j int) {
	c.t.Helper()
	c.check(i)
	c.check(j)
	if i == j {
		c.t.Fatalf("framework: cannot cut member %d from itself", i)
	}
	c.faults.cutLink(i, j)
}

// Isolate drops raft messages between member i and every other member.
// Clients still reach it.
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	c.check(i)
	c.faults.isolate(i, len(c.specs))
}

// Heal restores every link cut by Cut or Isolate.
func (c *Cluster) Heal() { c.faults.heal() }

// WaitLeader waits until the given members (all running members if none)
// agree on a leader that is one of them, and returns its number. It fails
// the test if that does not happen before ctx ends (or within 20s if ctx
// has no deadline), saying what each member saw.
func (c *Cluster) WaitLeader(ctx context.Context, members ...int) int {
	c.t.Helper()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWait)
		defer cancel()
	}
	explicit := len(members) > 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var views []string
	for {
		group := members
		if !explicit {
			group = c.RunningMembers()
		}
		var leader int
		leader, views = c.agreedLeader(ctx, group)
		if leader >= 0 {
			return leader
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("framework: members %v did not agree on a leader among them: %v (%s)", group, context.Cause(ctx), strings.Join(views, "; "))
			return -1
		case <-tick.C:
		}
	}
}

// agreedLeader returns the number of the leader every member of group knows,
// if they agree and it is one of them, else -1 and what each one saw.
func (c *Cluster) agreedLeader(ctx context.Context, group []int) (int, []string) {
	if len(group) == 0 {
		return -1, []string{"no member is running"}
	}
	views := make([]string, 0, len(group))
	agreed := -1
	for k, i := range group {
		c.check(i)
		c.mu.Lock()
		m := c.members[i]
		c.mu.Unlock()
		if m == nil {
			views = append(views, fmt.Sprintf("member %d is stopped", i))
			agreed = -2
			continue
		}
		id, err := m.leader(ctx)
		switch {
		case err != nil:
			views = append(views, fmt.Sprintf("member %d: %v", i, err))
			agreed = -2
		case id == 0:
			views = append(views, fmt.Sprintf("member %d knows no leader", i))
			agreed = -2
		default:
			l := c.IndexOf(id)
			views = append(views, fmt.Sprintf("member %d follows member %d (id %x)", i, l, id))
			if k == 0 && agreed == -1 {
				agreed = l
			} else if agreed != l {
				agreed = -2
			}
		}
	}
	if agreed < 0 || !slices.Contains(group, agreed) {
		return -1, views
	}
	return agreed, views
}

// Client returns a client of the given members (all if none), closed when t
// ends. With one member it is pinned to that member.
func (c *Cluster) Client(t testing.TB, members ...int) *sdk.Client {
	t.Helper()
	cli, err := sdk.New(sdk.Config{Endpoints: c.Endpoints(members...), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("framework: client of members %v: %v", members, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Status asks member i for its status, once: no retries, so a caller that
// polls sees each failure.
func (c *Cluster) Status(ctx context.Context, i int) (*catalogpb.StatusResponse, error) {
	c.t.Helper()
	addr := c.ClientAddr(i)
	c.mu.Lock()
	if c.status == nil {
		cli, err := sdk.New(sdk.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, MaxRetries: -1})
		if err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("status client: %w", err)
		}
		c.status = cli
	}
	cli := c.status
	c.mu.Unlock()
	st, err := cli.StatusOf(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("status of member %d (%s): %w", i, addr, err)
	}
	return st, nil
}
