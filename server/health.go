package server

import (
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

// Health checks: the servers of a DC probe the instances that registered a
// check (HTTP, TCP or the gRPC health protocol) and record their health.
//
// Who probes what: every instance is probed by one server, chosen by
// rendezvous hashing of the instance key ("service/id") over the live
// members. Each server decides alone from its own view, so no coordination
// is needed and a change of the live set moves only the instances of the
// server that came or went. A server's live set is:
//   - empty while it knows no leader (it could not record a result anyway,
//     and a server cut off from the others would otherwise take everything);
//   - else itself, if it is a voter, plus every voter whose raft stream is up
//     or was up within the last election timeout (the grace keeps a stream
//     reset from moving instances back and forth).
//
// Learners probe nothing: they are new and may still be catching up. Views
// differ for a moment when a member comes or goes, so an instance may be
// probed twice or not at all for about an election timeout; the proposals
// are conditional on the health the checker saw (SetHealthRequest.if_health),
// so a doubled checker never records a stale transition.
//
// Flap damping: failures_before_critical failures in a row make an instance
// CRITICAL, successes_before_passing successes in a row make it PASSING. Only
// transitions are proposed, never the result of each probe, so steady
// instances cost no raft writes at all.
const (
	// maxConcurrentProbes bounds the probes in flight on one server; the
	// others wait for their turn (their schedule slips, they are not lost).
	maxConcurrentProbes = 128
	// maxConcurrentHealthProposals bounds the transitions being proposed at
	// once (a rack going down turns many instances critical together).
	maxConcurrentHealthProposals = 16
	// maxQueuedInstanceEvents bounds the instance events waiting for the
	// checker's loop; past it they are dropped and the store is read again.
	maxQueuedInstanceEvents = 100000
	// probeBodySnippet is how much of an HTTP answer's body goes into the
	// health output; probeBodyDrain is how much more is read (so that the
	// server is not reset mid-answer) before the connection is closed.
	probeBodySnippet = 512
	probeBodyDrain   = 64 << 10
	// maxProbeRedirects bounds the same-host redirects an HTTP check follows.
	maxProbeRedirects = 5
	// maxCheckCount caps the success and failure counters.
	maxCheckCount = 1 << 20
	// reloadRetryDelay is how long the checker waits to read the store again
	// after a failed read.
	reloadRetryDelay = time.Second
)

// A healthChecker runs the health checks this server owns. Applied and
// Restored only queue work for run's loop, which owns every target.
type healthChecker struct {
	s      *Server
	lg     *slog.Logger
	client *http.Client

	// checkUnit is the length of one millisecond of a check's interval and
	// timeout (tests shrink it to run checks faster than the 1s minimum).
	checkUnit atomic.Int64

	mu sync.Mutex
	// started is set by run; until then Applied queues nothing (run reads
	// the store when it starts).
	started bool
	queue   []queuedEvent
	// reload asks the loop to read every instance from the store again.
	reload bool
	wakeC  chan struct{}

	// probes and proposals count what this server did (tests, metrics).
	probes    atomic.Int64
	proposals atomic.Int64
}

type queuedEvent struct {
	rev int64
	ev  *catalogpb.Event
}

func newHealthChecker(s *Server) *healthChecker {
	c := &healthChecker{s: s, lg: s.lg.With("component", "health"), wakeC: make(chan struct{}, 1)}
	c.checkUnit.Store(int64(time.Millisecond))
	userAgent := fmt.Sprintf("catalogd-health-check/%s (member %s)", Version, s.cfg.Name)
	c.client = &http.Client{
		Transport: &userAgentTransport{userAgent: userAgent, next: &http.Transport{
			// Checks go straight to the instance, never through a proxy
			// from the environment.
			Proxy:                  nil,
			DialContext:            (&net.Dialer{KeepAlive: -1}).DialContext,
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    10 * time.Second,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 64 << 10,
		}},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
				// A check probes its instance; a redirect elsewhere says
				// nothing about it (and must not make the servers call
				// arbitrary hosts).
				return http.ErrUseLastResponse
			}
			if len(via) >= maxProbeRedirects {
				return fmt.Errorf("stopped after %d redirects", maxProbeRedirects)
			}
			return nil
		},
	}
	return c
}

// userAgentTransport names catalogd in every probe, so that an instance's
// logs say who is asking.
type userAgentTransport struct {
	userAgent string
	next      http.RoundTripper
}

func (t *userAgentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", t.userAgent)
	return t.next.RoundTrip(req)
}

// Applied queues the instance events for the loop.
func (c *healthChecker) Applied(rev int64, batches []*catalogpb.EventBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.reload {
		return // the store will be read anyway
	}
	queued := false
	for _, b := range batches {
		for _, ev := range b.Events {
			if ev.Kind == registry.InstanceKind {
				c.queue = append(c.queue, queuedEvent{rev: b.Revision, ev: ev})
				queued = true
			}
		}
	}
	if !queued {
		return
	}
	if len(c.queue) > maxQueuedInstanceEvents {
		c.queue, c.reload = nil, true
	}
	c.wake()
}

// Restored makes the loop read every instance again: the store was replaced.
func (c *healthChecker) Restored(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return
	}
	c.queue, c.reload = nil, true
	c.wake()
}

func (c *healthChecker) wake() {
	select {
	case c.wakeC <- struct{}{}:
	default:
	}
}

// A checkTarget is one instance with a check, as the loop tracks it.
type checkTarget struct {
	key         string // service/id
	service, id string
	check       *catalogpb.HealthCheck
	// health is the stored health as the checker last saw it, at modRev.
	health catalogpb.HealthStatus
	modRev int64
	// gen changes when the check does, so that the result of a probe of
	// the old check is not counted for the new one.
	gen                 uint64
	successes, failures int

	owned     bool
	probing   bool
	proposing bool
	due       time.Time
	started   time.Time
	index     int // in the loop's schedule; -1 when not in it
}

type probeResult struct {
	t      *checkTarget
	gen    uint64
	ok     bool
	output string
}

type proposalResult struct {
	t    *checkTarget
	inst *catalogpb.Instance // the instance after the proposal, nil on error
	err  error
}

// checkLoop is the state that run's goroutine alone touches.
type checkLoop struct {
	c         *healthChecker
	ctx       context.Context
	targets   map[string]*checkTarget
	schedule  checkSchedule // owned targets not being probed, by due time
	inflight  int
	loadedRev int64
	// live is the sorted ids of the members sharing the checks; lastActive
	// is when each peer's stream was last seen up.
	live       []uint64
	lastActive map[uint64]time.Time

	probeC    chan probeResult
	proposalC chan proposalResult
	proposeC  chan struct{} // semaphore of proposals
	wg        sync.WaitGroup
}

// run probes the instances this server owns until stop is closed.
func (c *healthChecker) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &checkLoop{
		c:          c,
		ctx:        ctx,
		targets:    map[string]*checkTarget{},
		lastActive: map[uint64]time.Time{},
		probeC:     make(chan probeResult, maxConcurrentProbes),
		proposalC:  make(chan proposalResult, maxConcurrentHealthProposals),
		proposeC:   make(chan struct{}, maxConcurrentHealthProposals),
	}
	defer func() {
		cancel()
		l.wg.Wait()
		c.mu.Lock()
		c.started, c.queue = false, nil
		c.mu.Unlock()
	}()
	c.mu.Lock()
	c.started, c.reload = true, true
	c.mu.Unlock()

	refreshEvery := max(c.s.cfg.ElectionTimeout()/4, 10*time.Millisecond)
	refresh := time.NewTicker(refreshEvery)
	defer refresh.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var retry <-chan time.Time
	l.refreshLive(time.Now())
	if !l.drain() {
		retry = time.After(reloadRetryDelay)
	}
	for {
		now := time.Now()
		l.dispatch(now)
		timer.Stop()
		if l.inflight < maxConcurrentProbes && len(l.schedule) > 0 {
			// A full pipeline is woken by results, not by the timer.
			timer.Reset(max(l.schedule[0].due.Sub(now), 0))
		}
		select {
		case <-stop:
			return
		case <-c.wakeC:
			if !l.drain() {
				retry = time.After(reloadRetryDelay)
			}
		case <-retry:
			retry = nil
			c.mu.Lock()
			c.reload = true
			c.mu.Unlock()
			if !l.drain() {
				retry = time.After(reloadRetryDelay)
			}
		case r := <-l.probeC:
			l.probed(r)
		case r := <-l.proposalC:
			l.proposed(r)
		case <-refresh.C:
			l.refreshLive(time.Now())
		case <-timer.C:
		}
	}
}

// drain applies the queued events, after reading the store again if asked
// to. It reports false when that read failed (the reload stays asked for).
func (l *checkLoop) drain() bool {
	c := l.c
	c.mu.Lock()
	reload, queue := c.reload, c.queue
	c.reload, c.queue = false, nil
	c.mu.Unlock()
	if reload {
		if err := l.load(); err != nil {
			c.lg.Error("read the instances to check", "err", err)
			c.mu.Lock()
			c.reload, c.queue = true, nil
			c.mu.Unlock()
			return false
		}
	}
	for _, q := range queue {
		if q.rev <= l.loadedRev {
			continue // the store read already held it
		}
		switch q.ev.Type {
		case catalogpb.Event_PUT:
			l.upsert(q.ev.Instance, false)
		case catalogpb.Event_DELETE:
			if p := q.ev.PrevInstance; p != nil {
				l.remove(registry.InstanceKey(p.Service, p.Id))
			}
		}
	}
	return true
}

// load reads every instance with a check from the store.
func (l *checkLoop) load() error {
	var rev int64
	found := map[string]*catalogpb.Instance{}
	err := l.c.s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		return registry.ForEachInstance(tx, func(inst *catalogpb.Instance) error {
			if inst.Check != nil {
				found[registry.InstanceKey(inst.Service, inst.Id)] = inst
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for key := range l.targets {
		if found[key] == nil {
			l.remove(key)
		}
	}
	for _, inst := range found {
		l.upsert(inst, true)
	}
	l.loadedRev = rev
	l.c.lg.Debug("health checks loaded", "revision", rev, "instances", len(found))
	return nil
}

// upsert follows an instance that was written: a new check is scheduled, a
// changed one starts over, a removed one stops. force takes the stored
// health even if it looks older than what the checker knows (a restored
// store).
func (l *checkLoop) upsert(inst *catalogpb.Instance, force bool) {
	if inst == nil {
		return
	}
	key := registry.InstanceKey(inst.Service, inst.Id)
	if inst.Check == nil {
		l.remove(key)
		return
	}
	t := l.targets[key]
	if t == nil {
		t = &checkTarget{key: key, service: inst.Service, id: inst.Id, check: proto.CloneOf(inst.Check), index: -1}
		l.targets[key] = t
		t.health, t.modRev = inst.Health, inst.ModRevision
		t.owned = l.owns(key)
		if t.owned {
			l.schedule.add(t, time.Now().Add(l.firstDelay(t)))
		}
		return
	}
	if force || inst.ModRevision >= t.modRev {
		t.health, t.modRev = inst.Health, inst.ModRevision
	}
	if !proto.Equal(t.check, inst.Check) {
		t.check = proto.CloneOf(inst.Check)
		t.gen++
		t.successes, t.failures = 0, 0
		if t.owned && !t.probing {
			l.schedule.move(t, time.Now().Add(l.firstDelay(t)))
		}
	}
}

func (l *checkLoop) remove(key string) {
	t := l.targets[key]
	if t == nil {
		return
	}
	delete(l.targets, key)
	l.schedule.remove(t)
}

// refreshLive recomputes the live members and moves ownership if they
// changed.
func (l *checkLoop) refreshLive(now time.Time) {
	live := l.liveMembers(now)
	if slices.Equal(live, l.live) {
		return
	}
	l.c.lg.Info("health checks shared among live members", "members", len(live), "live", fmtIDs(live))
	l.live = live
	for _, t := range l.targets {
		owned := l.owns(t.key)
		switch {
		case owned && !t.owned:
			t.owned = true
			if !t.probing {
				l.schedule.add(t, now.Add(l.firstDelay(t)))
			}
		case !owned && t.owned:
			t.owned = false
			t.successes, t.failures = 0, 0
			l.schedule.remove(t)
		}
	}
}

func (l *checkLoop) liveMembers(now time.Time) []uint64 {
	s := l.c.s
	if s.node.Leader() == 0 {
		return nil
	}
	members, err := s.sm.members()
	if err != nil {
		l.c.lg.Warn("read members for health checks", "err", err)
		return l.live
	}
	active := s.node.Status().Active
	grace := s.cfg.ElectionTimeout()
	var live []uint64
	self := false
	for _, m := range members {
		if m.ID == s.id {
			self = !m.IsLearner
		}
		if m.IsLearner {
			continue
		}
		if m.ID == s.id || active[m.ID] {
			l.lastActive[m.ID] = now
		}
		if seen, ok := l.lastActive[m.ID]; ok && now.Sub(seen) <= grace {
			live = append(live, m.ID)
		}
	}
	if !self {
		return nil
	}
	for id := range l.lastActive {
		if !slices.ContainsFunc(members, func(m member) bool { return m.ID == id }) {
			delete(l.lastActive, id)
		}
	}
	return live
}

// owns reports whether this server probes the instance key.
func (l *checkLoop) owns(key string) bool {
	return rendezvousOwner(key, l.live) == l.c.s.id && l.c.s.id != 0
}

// rendezvousOwner picks the member with the highest hash of (key, id): the
// same answer on every server that sees the same members, and a member
// leaving moves only its own keys.
func rendezvousOwner(key string, members []uint64) uint64 {
	var best, bestScore uint64
	for _, id := range members {
		h := fnv.New64a()
		h.Write([]byte(key))
		var b [9]byte
		binary.BigEndian.PutUint64(b[1:], id)
		h.Write(b[:])
		// FNV mixes its last bytes poorly; a finalizer spreads them.
		score := mix64(h.Sum64())
		if best == 0 || score > bestScore || score == bestScore && id > best {
			best, bestScore = id, score
		}
	}
	return best
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (l *checkLoop) interval(t *checkTarget) time.Duration {
	return time.Duration(t.check.GetIntervalMs()) * time.Duration(l.c.checkUnit.Load())
}

func (l *checkLoop) timeout(t *checkTarget) time.Duration {
	ms := t.check.GetTimeoutMs()
	if ms <= 0 {
		ms = min(registry.DefaultCheckTimeoutMs, t.check.GetIntervalMs())
	}
	return time.Duration(ms) * time.Duration(l.c.checkUnit.Load())
}

// firstDelay spreads the first probes of many targets over one interval.
func (l *checkLoop) firstDelay(t *checkTarget) time.Duration {
	return rand.N(max(l.interval(t), 1))
}

// nextDue keeps the pace of one probe per interval, with 5% jitter so that
// targets started together drift apart.
func (l *checkLoop) nextDue(t *checkTarget, now time.Time) time.Time {
	iv := l.interval(t)
	jitter := time.Duration(0)
	if span := iv / 10; span > 0 {
		jitter = rand.N(span) - span/2
	}
	return laterOf(t.started.Add(iv+jitter), now)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// dispatch starts the probes that are due, as many as the bound allows.
func (l *checkLoop) dispatch(now time.Time) {
	for l.inflight < maxConcurrentProbes && len(l.schedule) > 0 && !l.schedule[0].due.After(now) {
		t := heap.Pop(&l.schedule).(*checkTarget)
		t.probing, t.started = true, now
		l.inflight++
		chk, gen, timeout := t.check, t.gen, l.timeout(t)
		l.c.probes.Add(1)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			ctx, cancel := context.WithTimeout(l.ctx, timeout)
			ok, output := l.c.probe(ctx, chk)
			cancel()
			select {
			case l.probeC <- probeResult{t: t, gen: gen, ok: ok, output: output}:
			case <-l.ctx.Done():
			}
		}()
	}
}

// probed counts a probe's result and proposes a transition when one is due.
func (l *checkLoop) probed(r probeResult) {
	l.inflight--
	t := r.t
	t.probing = false
	if l.targets[t.key] != t {
		return // deregistered meanwhile
	}
	now := time.Now()
	if r.gen != t.gen {
		if t.owned {
			l.schedule.add(t, now.Add(l.firstDelay(t)))
		}
		return
	}
	if !t.owned {
		return
	}
	l.schedule.add(t, l.nextDue(t, now))
	if r.ok {
		t.successes, t.failures = min(t.successes+1, maxCheckCount), 0
	} else {
		t.failures, t.successes = min(t.failures+1, maxCheckCount), 0
	}
	want := t.health
	switch {
	case r.ok && t.health != catalogpb.HealthStatus_PASSING && t.successes >= int(t.check.GetSuccessesBeforePassing()):
		want = catalogpb.HealthStatus_PASSING
	case !r.ok && t.health != catalogpb.HealthStatus_CRITICAL && t.failures >= int(t.check.GetFailuresBeforeCritical()):
		want = catalogpb.HealthStatus_CRITICAL
	}
	if want == t.health || t.proposing {
		return
	}
	t.proposing = true
	req := &catalogpb.SetHealthRequest{Service: t.service, Id: t.id, Health: want, IfHealth: t.health, Output: r.output}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		res := proposalResult{t: t}
		select {
		case l.proposeC <- struct{}{}:
			res.inst, res.err = l.c.setHealth(l.ctx, req)
			<-l.proposeC
		case <-l.ctx.Done():
			return
		}
		select {
		case l.proposalC <- res:
		case <-l.ctx.Done():
		}
	}()
}

// proposed takes the health a proposal left, whether it changed it or found
// it changed already.
func (l *checkLoop) proposed(r proposalResult) {
	t := r.t
	t.proposing = false
	if r.err != nil {
		lvl := slog.LevelWarn
		if errors.Is(r.err, registry.ErrInstanceNotFound) || errors.Is(r.err, registry.ErrServiceNotFound) || l.ctx.Err() != nil {
			lvl = slog.LevelDebug
		}
		l.c.lg.Log(l.ctx, lvl, "health transition not recorded; the next probe tries again", "instance", t.key, "err", r.err)
		return
	}
	if l.targets[t.key] == t && r.inst != nil && r.inst.ModRevision >= t.modRev {
		t.health, t.modRev = r.inst.Health, r.inst.ModRevision
	}
}

// setHealth proposes a health transition.
func (c *healthChecker) setHealth(ctx context.Context, req *catalogpb.SetHealthRequest) (*catalogpb.Instance, error) {
	c.proposals.Add(1)
	v, err := c.s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_SetHealth{SetHealth: req}})
	if err != nil {
		return nil, err
	}
	resp, ok := v.(*catalogpb.SetHealthResponse)
	if !ok {
		return nil, fmt.Errorf("set health of %s/%s answered %T", req.Service, req.Id, v)
	}
	c.lg.Info("instance health changed", "instance", registry.InstanceKey(req.Service, req.Id),
		"health", resp.GetInstance().GetHealth().String(), "was", req.IfHealth.String(), "output", req.Output)
	return resp.GetInstance(), nil
}

// probe runs one check and says whether it passed, with a line for the
// instance's health output.
func (c *healthChecker) probe(ctx context.Context, chk *catalogpb.HealthCheck) (ok bool, output string) {
	switch {
	case chk.GetHttp() != "":
		ok, output = c.probeHTTP(ctx, chk.GetHttp())
	case chk.GetTcp() != "":
		ok, output = probeTCP(ctx, chk.GetTcp())
	case chk.GetGrpc() != "":
		ok, output = probeGRPC(ctx, chk.GetGrpc(), chk.GetGrpcService())
	default:
		ok, output = false, "the check names no http, tcp or grpc target"
	}
	return ok, boundOutput(output)
}

func (c *healthChecker) probeHTTP(ctx context.Context, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, fmt.Sprintf("HTTP GET %s: %v", url, err)
	}
	req.Header.Set("Accept", "text/plain, application/json, */*")
	resp, err := c.client.Do(req)
	if err != nil {
		return false, fmt.Sprintf("HTTP GET %s: %v", url, unwrapURLError(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, probeBodySnippet))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyDrain))
	out := fmt.Sprintf("HTTP GET %s: %s", url, resp.Status)
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		out += fmt.Sprintf(" (redirect to %s not followed: a check follows redirects only to its own host)", loc)
	}
	if body := strings.TrimSpace(truncateUTF8(strings.ToValidUTF8(string(snippet), "\uFFFD"), probeBodySnippet)); body != "" {
		out += ": " + body
	}
	return resp.StatusCode >= 200 && resp.StatusCode < 300, out
}

// unwrapURLError drops the "Get \"url\":" that net/http puts before the
// cause, since the output names the URL already.
func unwrapURLError(err error) error {
	var uerr interface{ Unwrap() error }
	if errors.As(err, &uerr) {
		if inner := uerr.Unwrap(); inner != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return errors.New("timed out")
			}
			return inner
		}
	}
	return err
}

func probeTCP(ctx context.Context, addr string) (bool, string) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return false, fmt.Sprintf("TCP connect %s: timed out", addr)
		}
		return false, fmt.Sprintf("TCP connect %s: %v", addr, err)
	}
	conn.Close()
	return true, fmt.Sprintf("TCP connect %s: success", addr)
}

func probeGRPC(ctx context.Context, addr, service string) (bool, string) {
	what := fmt.Sprintf("gRPC health %s", addr)
	if service != "" {
		what += fmt.Sprintf(" service %q", service)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("catalogd-health-check/"+Version))
	if err != nil {
		return false, fmt.Sprintf("%s: %v", what, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return false, fmt.Sprintf("%s: timed out", what)
		}
		st := status.Convert(err)
		return false, fmt.Sprintf("%s: %s: %s", what, st.Code(), st.Message())
	}
	return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, fmt.Sprintf("%s: %s", what, resp.GetStatus())
}

// boundOutput makes a probe's text fit a health output: valid UTF-8 (a
// protobuf string must be) and at most registry.MaxHealthOutputLen bytes.
func boundOutput(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= registry.MaxHealthOutputLen {
		return s
	}
	return truncateUTF8(s, registry.MaxHealthOutputLen-len("...")) + "..."
}

// truncateUTF8 cuts valid UTF-8 s to at most n bytes without splitting a
// character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func fmtIDs(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%x", id)
	}
	return strings.Join(parts, ",")
}

// checkSchedule is a min-heap of targets by due time.
type checkSchedule []*checkTarget

func (s checkSchedule) Len() int           { return len(s) }
func (s checkSchedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s checkSchedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}

func (s *checkSchedule) Push(x any) {
	t := x.(*checkTarget)
	t.index = len(*s)
	*s = append(*s, t)
}

func (s *checkSchedule) Pop() any {
	old := *s
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	t.index = -1
	return t
}

// add puts t in the schedule at due, or moves it there if it is in already.
func (s *checkSchedule) add(t *checkTarget, due time.Time) {
	t.due = due
	if t.index >= 0 {
		heap.Fix(s, t.index)
		return
	}
	heap.Push(s, t)
}

// move reschedules t if it is in the schedule.
func (s *checkSchedule) move(t *checkTarget, due time.Time) {
	if t.index >= 0 {
		t.due = due
		heap.Fix(s, t.index)
	}
}

func (s *checkSchedule) remove(t *checkTarget) {
	if t.index >= 0 {
		heap.Remove(s, t.index)
	}
}
