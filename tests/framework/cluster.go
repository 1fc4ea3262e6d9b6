package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/server"
)

const (
	// launchAttempts is how often NewCluster picks fresh ports (or a fresh
	// subnet) when starting the members failed, most likely because a port
	// it chose was taken between choosing and binding it.
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
	// processesEnv, set to 1, makes every cluster run its members as
	// processes, as if each NewCluster had WithProcesses.
	processesEnv = "CATALOGD_TEST_PROCESSES"
	// artifactsEnv names the dir under which clusters make their artifact dirs.
	artifactsEnv = "CATALOGD_TEST_ARTIFACTS"
)

// An Option changes how a cluster runs: its members' server settings (every
// member has the same) or how members are run.
type Option func(*options)

type options struct {
	tuning
	processes bool
	// loopback keeps processes out of network namespaces even where they
	// could have them, for testing the fallback.
	loopback bool
}

// tuning holds the server settings a test may change.
type tuning struct {
	tickInterval   time.Duration
	electionTicks  int
	snapshotCount  uint64
	catchUpEntries uint64
	requestTimeout time.Duration
	autoPromote    bool
}

// WithSnapshotCount makes members snapshot and compact their raft log every n
// applied entries (server default 10000).
func WithSnapshotCount(n uint64) Option {
	return func(o *options) { o.snapshotCount = n }
}

// WithCatchUpEntries sets how many entries the log keeps after a snapshot
// (server default 5000): a follower further behind needs the database.
func WithCatchUpEntries(n uint64) Option {
	return func(o *options) { o.catchUpEntries = n }
}

// WithTickInterval sets the raft tick (server default 100ms); elections take
// ElectionTicks to 2×ElectionTicks ticks.
func WithTickInterval(d time.Duration) Option {
	return func(o *options) { o.tickInterval = d }
}

// WithElectionTicks sets how many ticks without a leader start an election
// (server default 10).
func WithElectionTicks(n int) Option {
	return func(o *options) { o.electionTicks = n }
}

// WithRequestTimeout sets how long a member waits for a request whose caller
// set no deadline (server default 5s).
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// WithAutoPromote sets whether the leader promotes a learner that joined to
// voter once it has caught up (server default true; --auto-promote).
func WithAutoPromote(on bool) Option {
	return func(o *options) { o.autoPromote = on }
}

// WithProcesses runs every member as a catalogd process, built from
// ./cmd/catalogd once per test binary (or $CATALOGD_TEST_BIN). As root with
// iproute2 and iptables, each process gets its own network namespace and
// Cut, CutOneWay and Isolate drop real packets; otherwise the processes
// listen on loopback ports and those methods skip the test.
func WithProcesses() Option {
	return func(o *options) { o.processes = true }
}

// A Cluster is a catalogd cluster run for one test. Members are numbered
// 0..Size()-1; the number of a member never changes, whatever its raft role.
// Join adds members with the next numbers; a member removed by RemoveMember
// keeps its number.
type Cluster struct {
	t        testing.TB
	tuning   tuning
	launcher launcher
	// faults is the drop table of in-process members; nil for processes.
	faults *faultTable
	// processes is set when members are catalogd processes.
	processes bool
	// netnsReason says why processes run without network namespaces; empty
	// when they have them (or members are in-process).
	netnsReason string
	// net is the processes' namespaces; nil in-process and without them.
	net       *netnsNet
	dataRoot  string
	artifacts string

	mu       sync.Mutex
	specs    []memberSpec
	logs     []*memberLog
	logFiles []*os.File
	members  []member // nil while a member is stopped
	ids      []uint64 // known from a member's first launch on
	removed  []bool
	problems []string
	status   *sdk.Client
}

// NewCluster starts a cluster of n members and returns once they agree on a
// leader. Members run in this process unless WithProcesses is given (or
// $CATALOGD_TEST_PROCESSES is 1). Everything is stopped when the test ends;
// if it failed, the end of each member's log is printed and ArtifactDir is
// kept.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("framework: a cluster needs at least 1 member, got %d", n)
	}
	defaults := server.DefaultConfig()
	o := options{
		tuning: tuning{
			tickInterval:   defaults.TickInterval,
			electionTicks:  defaults.ElectionTicks,
			snapshotCount:  defaults.SnapshotCount,
			catchUpEntries: defaults.CatchUpEntries,
			requestTimeout: defaults.RequestTimeout,
			autoPromote:    defaults.AutoPromote,
		},
		processes: os.Getenv(processesEnv) == "1",
	}
	for _, opt := range opts {
		opt(&o)
	}
	// Asked for before registering cleanup, so that the data is removed
	// after the members are stopped (cleanups run last-registered first).
	c := &Cluster{t: t, tuning: o.tuning, processes: o.processes, dataRoot: t.TempDir()}
	artifacts, err := newArtifactDir(t)
	if err != nil {
		t.Fatalf("framework: %v", err)
	}
	c.artifacts = artifacts
	t.Cleanup(c.cleanup)

	if o.processes {
		bin, err := catalogdBinary()
		if err != nil {
			t.Fatalf("framework: catalogd binary for member processes: %v", err)
		}
		c.launcher = &processLauncher{bin: bin, report: c.report}
		_, c.netnsReason = netnsSupport()
		if o.loopback && c.netnsReason == "" {
			c.netnsReason = "the test asked for loopback processes"
		}
	} else {
		c.faults = newFaultTable()
		c.launcher = inProcess{}
	}
	for i := range n {
		l, err := c.newLog(memberName(i))
		if err != nil {
			t.Fatalf("framework: %v", err)
		}
		c.logs = append(c.logs, l)
	}

	var errs []error
	for range launchAttempts {
		err := c.plan(n)
		if err == nil {
			err = c.launchAll()
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(t.Context(), defaultWait)
			defer cancel()
			c.WaitLeader(ctx)
			return c
		}
		// The peer addresses are part of the members' identity, so start over.
		errs = append(errs, err)
		c.stopAll(false)
		c.closeNet()
		for _, s := range c.specs {
			os.RemoveAll(s.dataDir)
		}
	}
	t.Fatalf("framework: could not start a %d-member cluster in %d attempts: %v", n, launchAttempts, errors.Join(errs...))
	return nil
}

func memberName(i int) string { return fmt.Sprintf("m%d", i) }

// newArtifactDir makes the dir for a cluster's logs and a test's check
// artifacts, under $CATALOGD_TEST_ARTIFACTS or the system's temp dir.
func newArtifactDir(t testing.TB) (string, error) {
	parent := os.Getenv(artifactsEnv)
	if parent == "" {
		parent = os.TempDir()
	} else if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("$%s: %w", artifactsEnv, err)
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > 64 {
		name = name[:64]
	}
	dir, err := os.MkdirTemp(parent, "catalogd-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("artifact dir: %w", err)
	}
	return dir, nil
}

// newLog returns a member log that copies every line to <ArtifactDir>/<name>.log.
func (c *Cluster) newLog(name string) (*memberLog, error) {
	f, err := os.OpenFile(filepath.Join(c.artifacts, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file of member %s: %w", name, err)
	}
	l := newMemberLog()
	l.setFile(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.logFiles = append(c.logFiles, f)
	return l, nil
}

// plan chooses names, data dirs and addresses for n members: free loopback
// ports, or a fresh set of network namespaces.
func (c *Cluster) plan(n int) error {
	var addrs []string
	if c.processes && c.netnsReason == "" {
		nw, err := newNetnsNet()
		if err != nil {
			return err
		}
		c.net = nw
	} else {
		var err error
		if addrs, err = freeAddrs(3 * n); err != nil {
			return err
		}
	}
	specs := make([]memberSpec, n)
	peers := make([]string, n)
	for i := range specs {
		var own []string
		if addrs != nil {
			own = addrs[3*i : 3*i+3]
		}
		spec, err := c.newSpec(i, own, c.logs[i])
		if err != nil {
			return err
		}
		specs[i] = spec
		peers[i] = spec.name + "=" + spec.peerAddr
	}
	for i := range specs {
		specs[i].initialCluster = strings.Join(peers, ",")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.specs = specs
	c.members = make([]member, n)
	c.ids = make([]uint64, n)
	c.removed = make([]bool, n)
	return nil
}

// newSpec describes member i. addrs are its client, peer and HTTP addresses
// on loopback; with network namespaces it gets a namespace and fixed ports
// on its own address instead.
func (c *Cluster) newSpec(i int, addrs []string, l *memberLog) (memberSpec, error) {
	name := memberName(i)
	spec := memberSpec{
		index:   i,
		name:    name,
		dataDir: filepath.Join(c.dataRoot, name),
		tuning:  c.tuning,
		log:     l,
		logger:  l.logger(),
		faults:  c.faults,
	}
	if c.net != nil {
		ip, err := c.net.addMember(i)
		if err != nil {
			return spec, err
		}
		spec.clientAddr = net.JoinHostPort(ip, strconv.Itoa(clientPort))
		spec.peerAddr = net.JoinHostPort(ip, strconv.Itoa(peerPort))
		spec.httpAddr = net.JoinHostPort(ip, strconv.Itoa(httpPort))
		spec.netns = c.net.command(i)
		return spec, nil
	}
	spec.clientAddr, spec.peerAddr, spec.httpAddr = addrs[0], addrs[1], addrs[2]
	return spec, nil
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
	for i := range c.Size() {
		if err := c.launch(c.t.Context(), i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) launch(ctx context.Context, i int) error {
	m, err := c.launcher.launch(ctx, c.spec(i))
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[i] = m
	c.ids[i] = m.id()
	return nil
}

// report records a problem of a member process that the test did not cause:
// an exit nobody asked for, a stop that needed SIGKILL. A removed member may
// exit by itself.
func (c *Cluster) report(i int, what string) {
	c.mu.Lock()
	removed := i < len(c.removed) && c.removed[i]
	if !removed {
		c.problems = append(c.problems, what)
	}
	c.mu.Unlock()
	if removed {
		what += " (it was removed from the cluster)"
	}
	c.t.Logf("framework: %s; its log is %s", what, filepath.Join(c.artifacts, memberName(i)+".log"))
}

// Problems returns what went wrong with member processes without the test
// asking for it: exits nobody asked for (a crash, a panic) and graceful stops
// that had to be killed. In-process members have none.
func (c *Cluster) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.problems)
}

func (c *Cluster) cleanup() {
	c.stopAll(false)
	c.closeNet()
	c.mu.Lock()
	if c.status != nil {
		c.status.Close()
	}
	for _, f := range c.logFiles {
		f.Close()
	}
	logs := slices.Clone(c.logs)
	c.mu.Unlock()
	if !c.t.Failed() {
		os.RemoveAll(c.artifacts)
		return
	}
	for i, l := range logs {
		lines := l.tail()
		c.t.Logf("--- log of member %d (%s), last %d lines ---\n%s", i, memberName(i), len(lines), strings.Join(lines, "\n"))
	}
	c.t.Logf("framework: member logs and artifacts of the failed test are kept in %s", c.artifacts)
}

// closeNet removes the network namespaces, if any.
func (c *Cluster) closeNet() {
	if c.net == nil {
		return
	}
	if err := c.net.close(); err != nil {
		c.t.Errorf("framework: remove the cluster's network namespaces: %v", err)
	}
	c.net = nil
}

func (c *Cluster) check(i int) {
	c.t.Helper()
	if n := c.Size(); i < 0 || i >= n {
		c.t.Fatalf("framework: no member %d: the cluster has members 0..%d", i, n-1)
	}
}

// spec returns member i's spec.
func (c *Cluster) spec(i int) memberSpec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.specs[i]
}

// Processes reports whether the members are catalogd processes (a killed
// process logs nothing, unlike an in-process member).
func (c *Cluster) Processes() bool { return c.processes }

// Size returns the number of members, running or not, removed or not.
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.specs)
}

// Name returns member i's name.
func (c *Cluster) Name(i int) string { c.check(i); return c.spec(i).name }

// ClientAddr returns member i's gRPC address (the same across restarts).
func (c *Cluster) ClientAddr(i int) string { c.check(i); return c.spec(i).clientAddr }

// PeerAddr returns member i's raft peer address.
func (c *Cluster) PeerAddr(i int) string { c.check(i); return c.spec(i).peerAddr }

// HTTPAddr returns member i's HTTP address.
func (c *Cluster) HTTPAddr(i int) string { c.check(i); return c.spec(i).httpAddr }

// ArtifactDir returns the dir that holds the members' logs (<name>.log) and
// whatever a test writes there for people to read after a failure: it is
// kept, and its path logged, when the test failed, and removed otherwise.
// It lives under $CATALOGD_TEST_ARTIFACTS if set, else the temp dir.
func (c *Cluster) ArtifactDir() string { return c.artifacts }

// ID returns member i's raft id; a member that joined has the id the
// cluster gave it.
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

// Running reports whether member i is running: started and not stopped,
// and, for a process, not exited. A paused process is running.
func (c *Cluster) Running(i int) bool {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i] != nil && c.members[i].alive()
}

// Removed reports whether member i was removed by RemoveMember.
func (c *Cluster) Removed(i int) bool {
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed[i]
}

// RunningMembers returns the numbers of the running members that were not
// removed.
func (c *Cluster) RunningMembers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var running []int
	for i, m := range c.members {
		if m != nil && m.alive() && !c.removed[i] {
			running = append(running, i)
		}
	}
	return running
}

// Others returns the numbers of every member except the given ones and
// those removed.
func (c *Cluster) Others(except ...int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var others []int
	for i := range c.specs {
		if !slices.Contains(except, i) && !c.removed[i] {
			others = append(others, i)
		}
	}
	return others
}

// Endpoints returns the client addresses of the given members (all that were
// not removed if none).
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
	c.mu.Lock()
	l := c.logs[i]
	c.mu.Unlock()
	return l.logged(msg)
}

// Stop stops member i gracefully: a leader hands leadership over first. A
// process gets SIGTERM and, if it has not exited after 15s, SIGKILL (and the
// test a Problems entry).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.take(i)
	m.stop(context.Background())
}

// Kill stops member i as abruptly as it can be stopped. A process gets
// SIGKILL. An in-process member has its links cut first, so it leaves
// without handing leadership over and the others must notice its absence and
// elect a leader themselves; its data is still closed cleanly, and the links
// it had are restored once it is down, so a Restart finds the network as the
// test left it.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.take(i)
	if pm, ok := m.(*processMember); ok {
		pm.kill()
		return
	}
	saved := c.faults.links(i)
	c.faults.isolate(i, c.Size())
	ctx, cancel := context.WithTimeout(context.Background(), killHandoverWait)
	defer cancel()
	m.stop(ctx)
	c.faults.healMember(i)
	c.faults.restore(saved)
}

// take marks member i stopped and returns it for stopping. A process that
// exited by itself is taken too (stopping it does nothing).
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
func (c *Cluster) StopAll() { c.stopAll(true) }

// stopAll stops every member, gracefully or, for processes, with SIGKILL.
func (c *Cluster) stopAll(graceful bool) {
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
		wg.Go(func() {
			if pm, ok := m.(*processMember); ok && !graceful {
				pm.kill()
				return
			}
			m.stop(ctx)
		})
	}
	wg.Wait()
}

// Restart starts the stopped member i again with the same name, addresses
// and data dir. It returns without waiting for a leader.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.check(i)
	c.mu.Lock()
	if m := c.members[i]; m != nil && !m.alive() {
		c.members[i] = nil // exited by itself
	}
	running := c.members[i] != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("framework: member %d (%s) is running: stop it before restarting it", i, c.Name(i))
	}
	deadline := time.Now().Add(restartPortWait)
	for {
		err := c.launch(c.t.Context(), i)
		if err == nil {
			return
		}
		if !errors.Is(err, server.ErrAddrInUse) || time.Now().After(deadline) {
			c.t.Fatalf("framework: restart member %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RestartAll restarts every stopped member that was not removed. It returns
// without waiting for a leader.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	for i := range c.Size() {
		if !c.Running(i) && !c.Removed(i) {
			c.Restart(i)
		}
	}
}

// WipeDataDir deletes member i's data dir, as a lost disk would. The member
// must not be running.
func (c *Cluster) WipeDataDir(i int) {
	c.t.Helper()
	c.check(i)
	if c.Running(i) {
		c.t.Fatalf("framework: cannot wipe the data dir of member %d (%s): it is running; Stop or Kill it first", i, c.Name(i))
	}
	if err := os.RemoveAll(c.spec(i).dataDir); err != nil {
		c.t.Fatalf("framework: wipe the data dir of member %d: %v", i, err)
	}
}

// WaitLeader waits until the given members (if none: the running members
// that were not removed and are not paused) agree on a leader that is one of
// them, and returns its number. It fails the test if that does not happen
// before ctx ends (or within 20s if ctx has no deadline), saying what each
// member saw. A paused member answers nobody, so it never agrees.
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
			group = slices.DeleteFunc(c.RunningMembers(), c.Paused)
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
		if m == nil || !m.alive() {
			views = append(views, fmt.Sprintf("member %d is not running", i))
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
		cli, err := sdk.New(sdk.Config{Endpoints: []string{addr}, DialTimeout: 2 * time.Second, MaxRetries: -1})
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
