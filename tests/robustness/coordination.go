package robustness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

// The names the coordination workloads use. The register is a KV key,
// checked with the other keys.
const (
	lockName     = "robustness/lock"
	registerKey  = "robustness/fenced"
	electionName = "robustness/election"
	queueName    = "robustness/queue"
)

// A coordConfig shapes the coordination workloads that run alongside the
// key-value load; a zero count leaves a workload out.
type coordConfig struct {
	// Lockers take the mutex lockName and write the fenced register.
	Lockers int
	// Campaigners campaign in the election electionName; one more client
	// observes it.
	Campaigners int
	// Producers enqueue to queueName; Consumers dequeue and acknowledge.
	Producers, Consumers int
	// SessionTTL is the TTL of every session's lease: short, so that the
	// faults expire leases and move locks, leadership and items.
	SessionTTL time.Duration
	// WaitTimeout bounds a blocking call (Lock, Campaign, Dequeue);
	// OpTimeout any other call.
	WaitTimeout, OpTimeout time.Duration
}

var defaultCoord = coordConfig{
	Lockers: 3, Campaigners: 3, Producers: 2, Consumers: 3,
	SessionTTL: 2 * time.Second, WaitTimeout: 4 * time.Second, OpTimeout: 2 * time.Second,
}

func (cfg coordConfig) enabled() bool {
	return cfg.Lockers+cfg.Campaigners+cfg.Producers+cfg.Consumers > 0
}

// Behaviours of the workloads, in percent of the cycles.
const (
	// zombiePercent of a locker's holds revoke their own lease, then still
	// try the fenced write, which must be refused.
	zombiePercent = 5
	// pausedHolderPercent of the holds (at most one per run: the lock
	// waits for the lease to expire) stop renewing their lease, wait until
	// it has expired, then try the fenced write: the paused holder of
	// Jepsen's lock analyses.
	pausedHolderPercent = 2
	// Of a leader's terms, resignPercent end with Resign, revokePercent
	// with a revoke of its lease, the rest by letting the lease expire.
	resignPercent = 75
	revokePercent = 20
	// Of the items a consumer gets, abandonPercent are dropped with a
	// revoke of the consumer's lease and expirePercent by letting it
	// expire, before any Ack: they go back to the head of the queue.
	abandonPercent = 6
	expirePercent  = 3
)

// enqueuePause is how long a producer waits between enqueues, so that the
// consumers keep up and the drain after the run is short.
const enqueuePause = 15 * time.Millisecond

// A coordination runs the coordination workloads of a run and records
// what the servers answered: facts about the fencing tokens of the lock
// and of the election, the fenced register's operations (into the
// key-value history, checked by porcupine with the other keys) and the
// queue's operations.
type coordination struct {
	cfg       coordConfig
	cluster   uint64
	h         *history
	endpoints []string
	// stopCtx ends when the workloads stop; blocking calls are tied to it.
	stopCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	clients []*sdk.Client

	mu            sync.Mutex
	lockFacts     []holdFact
	electionFacts []holdFact
	queueOps      []queueOp
	unexpected    map[string]int
	// counts are statistics for the log, by name.
	counts map[string]int
	// pausedHolder is set once a locker played the paused holder.
	pausedHolder atomic.Bool
}

// startCoordination starts the workloads of cfg against the cluster with
// id cluster. Client k draws its choices from a generator seeded with
// (seed, 1000+k), apart from the key-value load's.
func startCoordination(h *history, endpoints []string, cluster uint64, seed int64, cfg coordConfig) (*coordination, error) {
	ctx, cancel := context.WithCancel(context.Background())
	co := &coordination{cfg: cfg, cluster: cluster, h: h, endpoints: endpoints, stopCtx: ctx, cancel: cancel,
		unexpected: map[string]int{}, counts: map[string]int{}}
	if !cfg.enabled() {
		return co, nil
	}
	var runs []func()
	newClient := func(role string) (*coordClient, error) {
		cli, err := newCoordClient(endpoints, cluster)
		if err != nil {
			return nil, fmt.Errorf("%s client over %v: %w", role, endpoints, err)
		}
		k := len(co.clients)
		co.clients = append(co.clients, cli)
		return &coordClient{co: co, id: k, cli: cli, rng: rand.New(rand.NewPCG(uint64(seed), uint64(1000+k)))}, nil
	}
	add := func(n int, role string, run func(*coordClient)) error {
		for range n {
			c, err := newClient(role)
			if err != nil {
				return err
			}
			runs = append(runs, func() { run(c) })
		}
		return nil
	}
	err := errors.Join(
		add(cfg.Lockers, "locker", (*coordClient).runLocker),
		add(cfg.Campaigners, "campaigner", (*coordClient).runCampaigner),
		add(min(cfg.Campaigners, 1), "observer", (*coordClient).runObserver),
		add(cfg.Producers, "producer", (*coordClient).runProducer),
		add(cfg.Consumers, "consumer", (*coordClient).runConsumer),
	)
	if err != nil {
		co.closeClients()
		cancel()
		return nil, err
	}
	for _, run := range runs {
		co.wg.Go(run)
	}
	return co, nil
}

// newCoordClient returns a client that, like the key-value load's, waits
// for a connection rather than failing at once, and refuses answers of
// another cluster (sdk.ErrWrongCluster).
func newCoordClient(endpoints []string, cluster uint64) (*sdk.Client, error) {
	return sdk.New(sdk.Config{
		Endpoints:   endpoints,
		DialTimeout: time.Second,
		ClusterID:   cluster,
		DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.WaitForReady(true))},
	})
}

// stop ends the workloads: blocking calls are cancelled, other calls run to
// their answer, every client revokes its session's lease. Later calls do
// nothing.
func (co *coordination) stop() {
	co.cancel()
	co.wg.Wait()
	co.closeClients()
	co.clients = nil
}

func (co *coordination) closeClients() {
	for _, cli := range co.clients {
		cli.Close()
	}
}

func (co *coordination) count(what string) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.counts[what]++
}

func (co *coordination) lockFact(f holdFact) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.lockFacts = append(co.lockFacts, f)
}

func (co *coordination) electionFact(f holdFact) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.electionFacts = append(co.electionFacts, f)
}

func (co *coordination) queueOp(o queueOp) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.queueOps = append(co.queueOps, o)
}

// failed notes an error of a workload; one the faults do not explain is
// reported by unexpectedErrors.
func (co *coordination) failed(what string, err error) {
	if expectedCoordFailure(err) {
		return
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	co.unexpected[what+": "+oneLine(err.Error())]++
}

// unexpectedErrors describes the errors no fault explains, most frequent
// first.
func (co *coordination) unexpectedErrors() []string {
	co.mu.Lock()
	defer co.mu.Unlock()
	msgs := make([]string, 0, len(co.unexpected))
	for m := range co.unexpected {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return co.unexpected[msgs[i]] > co.unexpected[msgs[j]] })
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%d× %s", co.unexpected[m], m)
	}
	return out
}

// expectedCoordFailure reports whether err is one the faults explain: those
// of the key-value load, and a session's lease lost (expired while its
// member was cut off or paused), with what it held or was handed.
func expectedCoordFailure(err error) bool {
	if expectedFailure(err) {
		return true
	}
	for _, sentinel := range []error{
		sdk.ErrLeaseNotFound, sdk.ErrNotHeld, sdk.ErrItemNotFound, sdk.ErrSessionClosed,
		sdk.ErrKeepAliveStopped, sdk.ErrNotLeader,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// reasonSentinels map the reasons of catalogd's errors to the sdk's
// sentinels, for the calls the workloads make through the generated
// clients (whose errors the sdk does not map).
var reasonSentinels = map[string]error{
	catalogpb.ErrorReason_NO_LEADER.String():            sdk.ErrNoLeader,
	catalogpb.ErrorReason_STOPPED.String():              sdk.ErrStopped,
	catalogpb.ErrorReason_TIMEOUT.String():              sdk.ErrTimeout,
	catalogpb.ErrorReason_NOT_LEADER.String():           sdk.ErrNotLeader,
	catalogpb.ErrorReason_LEASE_NOT_FOUND.String():      sdk.ErrLeaseNotFound,
	catalogpb.ErrorReason_LOCK_NOT_HELD.String():        sdk.ErrNotHeld,
	catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND.String(): sdk.ErrItemNotFound,
	catalogpb.ErrorReason_WAIT_SUPERSEDED.String():      sdk.ErrWaitSuperseded,
	catalogpb.ErrorReason_LOCK_KIND_MISMATCH.String():   sdk.ErrKindMismatch,
}

// rawError wraps an error of a generated client with the sdk sentinel of
// its reason (or gRPC code), so errors.Is works as on the sdk's errors.
func rawError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "catalogd" {
			if s := reasonSentinels[info.GetReason()]; s != nil {
				return fmt.Errorf("%w: %w", s, err)
			}
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w: %w", sdk.ErrUnavailable, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	case codes.Canceled:
		return fmt.Errorf("%w: %w", context.Canceled, err)
	}
	return err
}

// refused reports whether a failed write was certainly not applied: the
// cluster had no leader, another cluster answered, or the state machine
// refused it (the lock not held, the item not handed to the lease, the
// lease gone), which changes nothing.
func refused(err error) bool {
	for _, sentinel := range []error{sdk.ErrNoLeader, sdk.ErrWrongCluster, errOtherCluster, sdk.ErrNotHeld, sdk.ErrItemNotFound, sdk.ErrLeaseNotFound} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// A coordClient is one client of a coordination workload; it runs one
// operation at a time.
type coordClient struct {
	co   *coordination
	id   int
	cli  *sdk.Client
	rng  *rand.Rand
	sess *sdk.Session
	seq  int
	// rec records the fenced register's operations (lockers).
	rec *recorder
}

func (c *coordClient) stopped() bool { return c.co.stopCtx.Err() != nil }

// opCtx bounds a call that is not a wait: it runs to its answer even when
// the workloads stop, so fewer outcomes are unknown.
func (c *coordClient) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.co.cfg.OpTimeout)
}

// waitCtx bounds a blocking call; stopping the workloads cancels it.
func (c *coordClient) waitCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.co.stopCtx, c.co.cfg.WaitTimeout)
}

// pause waits a little after a failure (a member that is down refuses at
// once), or until the workloads stop.
func (c *coordClient) pause() {
	select {
	case <-c.co.stopCtx.Done():
	case <-time.After(failurePause):
	}
}

// session returns the client's session, starting one when it has none or
// its lease was lost; nil (after a pause) when that failed.
func (c *coordClient) session(role string) *sdk.Session {
	if c.sess != nil && c.sess.Err() == nil {
		return c.sess
	}
	if c.sess != nil {
		c.co.count(role + " sessions lost")
		c.sess.Orphan()
		c.sess = nil
	}
	ctx, cancel := c.opCtx()
	defer cancel()
	s, err := sdk.NewSession(ctx, c.cli, sdk.WithSessionTTL(c.co.cfg.SessionTTL))
	if err != nil {
		c.co.failed(role+" session", err)
		c.pause()
		return nil
	}
	c.sess = s
	return s
}

// drop ends the client's session: its lease is revoked, which releases
// whatever the lease holds or waits for in that apply. It returns the
// revoke's revision, or 0 when the revoke failed (the lease then expires:
// its keep-alive is stopped).
func (c *coordClient) drop(role string) int64 {
	s := c.sess
	c.sess = nil
	if s == nil {
		return 0
	}
	s.Orphan()
	ctx, cancel := c.opCtx()
	defer cancel()
	resp, err := c.cli.Revoke(ctx, s.Lease())
	if err != nil {
		if !errors.Is(err, sdk.ErrLeaseNotFound) {
			c.co.failed(role+" revoke", err)
		}
		return 0
	}
	return resp.GetHeader().GetRevision()
}

// nextValue returns a value (or payload) no other operation of the run uses.
func (c *coordClient) nextValue(prefix string) string {
	c.seq++
	return fmt.Sprintf("%s%d-%d", prefix, c.id, c.seq)
}

// runLocker takes the mutex, writes the fenced register, reads it and
// unlocks, until the workloads stop.
func (c *coordClient) runLocker() {
	c.rec = c.co.h.recorder()
	defer c.dropAtEnd("locker")
	for !c.stopped() {
		s := c.session("locker")
		if s == nil {
			continue
		}
		c.lockCycle(s)
	}
}

// dropAtEnd revokes the session's lease when the workloads stop, so that
// nothing stays held or handed out longer than needed.
func (c *coordClient) dropAtEnd(role string) {
	if lease := c.sessionLease(); lease != 0 {
		if rev := c.drop(role); rev != 0 {
			c.goneLease(role, lease, rev)
		}
	}
}

func (c *coordClient) sessionLease() int64 {
	if c.sess == nil {
		return 0
	}
	return c.sess.Lease()
}

// goneLease records that no token of lease is held from revision rev on
// (its lease was revoked then), for the lock or the election.
func (c *coordClient) goneLease(role string, lease, rev int64) {
	f := holdFact{Kind: factGone, Lease: lease, Revision: rev, Client: c.id, What: "revoke of the lease"}
	switch role {
	case "locker":
		c.co.lockFact(f)
	case "campaigner":
		c.co.electionFact(f)
	}
}

func (c *coordClient) lockCycle(s *sdk.Session) {
	lease := s.Lease()
	m := sdk.NewMutex(s, lockName)
	ctx, cancel := c.waitCtx()
	call := c.co.h.now()
	err := m.Lock(ctx)
	ret := c.co.h.now()
	cancel()
	if err != nil {
		if !c.stopped() {
			c.co.failed("lock", err)
		}
		// The sdk gives up the wait; drop the lease as well, so that
		// nothing it may have been granted meanwhile stays held.
		if rev := c.drop("locker"); rev != 0 {
			c.goneLease("locker", lease, rev)
		}
		c.pause()
		return
	}
	token := m.Token()
	c.co.count("lock grants")
	grant := holdFact{Kind: factGrantedBy, Token: token, Lease: lease, Revision: math.MaxInt64, Client: c.id, Call: call, Return: ret, What: "Lock"}
	// The holder's own record names the grant's revision.
	rctx, rcancel := c.opCtx()
	if st, err := c.cli.GetLock(rctx, lockName); err == nil {
		grant.Revision = st.GetHeader().GetRevision()
		for _, o := range st.GetState().GetHolders() {
			if o.GetToken() == token {
				grant.Kind, grant.Revision = factGranted, o.GetRevision()
			}
		}
		if grant.Kind != factGranted {
			// Released between the grant and the read: the lease ended,
			// or a cancelled attempt of the same Lock call withdrew it.
			c.co.count("grants lost before use")
		}
	} else {
		c.co.failed("get lock", err)
	}
	rcancel()
	c.co.lockFact(grant)

	switch p := c.rng.IntN(100); {
	case p < zombiePercent:
		// The holder's lease is revoked; its write must be refused.
		if rev := c.drop("locker"); rev != 0 {
			c.goneLease("locker", lease, rev)
			c.fencedWrite(lease, token, "zombie write")
		}
		return
	case p < zombiePercent+pausedHolderPercent && c.co.pausedHolder.CompareAndSwap(false, true):
		if c.waitExpired(s) {
			c.fencedWrite(lease, token, "paused-holder write")
		}
		return
	}
	if !c.fencedWrite(lease, token, "fenced write") {
		return
	}
	c.readRegister()
	// Unlock through the generated client: its answer's revision tells
	// when the hold ended.
	uctx, ucancel := c.opCtx()
	resp, err := catalogpb.NewLockClient(c.cli.Conn()).Unlock(uctx, &catalogpb.UnlockRequest{Name: lockName, Lease: lease, Token: token})
	ucancel()
	if err != nil {
		err = rawError(err)
		c.co.failed("unlock", err)
		if !refused(err) {
			if rev := c.drop("locker"); rev != 0 {
				c.goneLease("locker", lease, rev)
			}
		}
		return
	}
	rev := resp.GetHeader().GetRevision()
	c.co.lockFact(holdFact{Kind: factHeld, Token: token, Lease: lease, Revision: rev - 1, Client: c.id, What: "Unlock (held before it)"})
	c.co.lockFact(holdFact{Kind: factGone, Token: token, Lease: lease, Revision: rev, Client: c.id, What: "Unlock"})
}

// waitExpired stops renewing the session's lease and waits until the
// cluster no longer knows it (or the workloads stop, or 3 TTLs passed):
// the holder was paused past its lease. It reports whether the lease is
// gone.
func (c *coordClient) waitExpired(s *sdk.Session) bool {
	s.Orphan()
	c.sess = nil
	deadline := time.Now().Add(3 * c.co.cfg.SessionTTL)
	for !c.stopped() && time.Now().Before(deadline) {
		ctx, cancel := c.opCtx()
		resp, err := c.cli.TimeToLive(ctx, s.Lease(), false)
		cancel()
		if err == nil && resp.GetTtlSeconds() < 0 {
			return true
		}
		select {
		case <-c.co.stopCtx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// fencedWrite puts a new value into the register in a transaction guarded
// by the lock's fence with token, records it, and reports whether it was
// accepted.
func (c *coordClient) fencedWrite(lease int64, token uint64, what string) bool {
	in := input{Kind: opFenced, Key: registerKey, Value: c.nextValue("l"), Lock: lockName, Token: token}
	ctx, cancel := c.opCtx()
	defer cancel()
	call := c.co.h.now()
	resp, err := c.cli.NewTxn(ctx).
		If(sdk.Compare(sdk.Fence(lockName, token), "=", true)).
		Then(sdk.OpPut(registerKey, in.Value)).
		Commit()
	if err != nil {
		c.co.failed(what, err)
		c.rec.record(call, in, output{Outcome: writeFailure(err), Err: err.Error()})
		return false
	}
	h := resp.GetHeader()
	out := output{Outcome: outcomeOK, Revision: h.GetRevision(), Member: h.GetMemberId(), Term: h.GetRaftTerm(), Succeeded: resp.GetSucceeded()}
	c.rec.record(call, in, out)
	if !out.Succeeded {
		c.co.count(what + "s refused")
		return false
	}
	c.co.count(what + "s accepted")
	c.co.lockFact(holdFact{Kind: factHeld, Token: token, Lease: lease, Revision: out.Revision, Client: c.id, What: what + " " + in.Value})
	return true
}

// readRegister reads the register linearizably into the history.
func (c *coordClient) readRegister() {
	in := input{Kind: opGet, Key: registerKey}
	ctx, cancel := c.opCtx()
	defer cancel()
	call := c.co.h.now()
	out, err := execute(ctx, c.cli, c.co.cluster, in)
	if err != nil {
		c.co.failed("read register", err)
		return
	}
	c.rec.record(call, in, out)
}

// runCampaigner campaigns, proclaims a few values while it leads, and ends
// its term (resign, revoke, or lease expiry), until the workloads stop.
func (c *coordClient) runCampaigner() {
	defer c.dropAtEnd("campaigner")
	for !c.stopped() {
		s := c.session("campaigner")
		if s == nil {
			continue
		}
		c.term(s)
	}
}

func (c *coordClient) term(s *sdk.Session) {
	lease := s.Lease()
	e := sdk.NewElection(s, electionName)
	ctx, cancel := c.waitCtx()
	call := c.co.h.now()
	err := e.Campaign(ctx, []byte(c.nextValue("e")))
	ret := c.co.h.now()
	cancel()
	if err != nil {
		if !c.stopped() {
			c.co.failed("campaign", err)
		}
		if rev := c.drop("campaigner"); rev != 0 {
			c.goneLease("campaigner", lease, rev)
		}
		c.pause()
		return
	}
	key := e.Key()
	c.co.count("elections won")
	c.co.electionFact(holdFact{Kind: factGranted, Token: key.GetToken(), Lease: lease, Revision: key.GetRevision(), Client: c.id, Call: call, Return: ret, What: "Campaign"})
	client := catalogpb.NewElectionClient(c.cli.Conn())
	for range 1 + c.rng.IntN(3) {
		ctx, cancel := c.opCtx()
		resp, err := client.Proclaim(ctx, &catalogpb.ProclaimRequest{Leader: key, Value: []byte(c.nextValue("e"))})
		cancel()
		if err != nil {
			err = rawError(err)
			c.co.failed("proclaim", err)
			if rev := c.drop("campaigner"); rev != 0 {
				c.goneLease("campaigner", lease, rev)
			}
			return
		}
		c.co.count("proclaims")
		c.co.electionFact(holdFact{Kind: factHeld, Token: key.GetToken(), Lease: lease, Revision: resp.GetHeader().GetRevision(), Client: c.id, What: "Proclaim"})
		select {
		case <-c.co.stopCtx.Done():
			return
		case <-time.After(time.Duration(5+c.rng.IntN(20)) * time.Millisecond):
		}
	}
	switch p := c.rng.IntN(100); {
	case p < resignPercent:
		ctx, cancel := c.opCtx()
		resp, err := client.Resign(ctx, &catalogpb.ResignRequest{Leader: key})
		cancel()
		if err != nil {
			err = rawError(err)
			c.co.failed("resign", err)
			if rev := c.drop("campaigner"); rev != 0 {
				c.goneLease("campaigner", lease, rev)
			}
			return
		}
		c.co.count("resignations")
		rev := resp.GetHeader().GetRevision()
		c.co.electionFact(holdFact{Kind: factHeld, Token: key.GetToken(), Lease: lease, Revision: rev - 1, Client: c.id, What: "Resign (led before it)"})
		c.co.electionFact(holdFact{Kind: factGone, Token: key.GetToken(), Lease: lease, Revision: rev, Client: c.id, What: "Resign"})
	case p < resignPercent+revokePercent:
		c.co.count("leader leases revoked")
		if rev := c.drop("campaigner"); rev != 0 {
			c.goneLease("campaigner", lease, rev)
		}
	default:
		// The leader stops renewing its lease: the next candidate leads
		// once it expired.
		c.co.count("leader leases left to expire")
		s.Orphan()
		c.sess = nil
	}
}

// runObserver follows the election's leadership: every leader it reports
// led at the revision of the report.
func (c *coordClient) runObserver() {
	for resp := range c.cli.ObserveElection(c.co.stopCtx, electionName) {
		if !resp.GetHasLeader() {
			continue
		}
		l := resp.GetLeader()
		c.co.count("leaders observed")
		c.co.electionFact(holdFact{Kind: factHeld, Token: l.GetToken(), Lease: l.GetLease(), Revision: resp.GetHeader().GetRevision(), Client: c.id, What: "Observe"})
	}
}

// runProducer enqueues unique payloads until the workloads stop.
func (c *coordClient) runProducer() {
	client := catalogpb.NewQueueClient(c.cli.Conn())
	for !c.stopped() {
		payload := c.nextValue("q")
		ctx, cancel := c.opCtx()
		call := c.co.h.now()
		resp, err := client.Enqueue(ctx, &catalogpb.EnqueueRequest{Queue: queueName, Payload: []byte(payload)})
		ret := c.co.h.now()
		cancel()
		o := queueOp{Kind: queueEnqueue, Client: c.id, Payload: payload, Outcome: outcomeOK, Call: call, Return: ret}
		if err != nil {
			err = rawError(err)
			c.co.failed("enqueue", err)
			o.Outcome, o.Err = outcomeUnknown, err.Error()
			if refused(err) {
				o.Outcome = outcomeNotApplied
			}
			c.co.queueOp(o)
			c.pause()
			continue
		}
		o.ID = resp.GetId()
		c.co.queueOp(o)
		select {
		case <-c.co.stopCtx.Done():
		case <-time.After(enqueuePause):
		}
	}
}

// runConsumer dequeues items and acknowledges most; it drops some without
// an Ack (revoking or orphaning its lease), until the workloads stop.
func (c *coordClient) runConsumer() {
	defer c.dropAtEnd("consumer")
	var q *sdk.Queue
	var qs *sdk.Session
	for !c.stopped() {
		s := c.session("consumer")
		if s == nil {
			continue
		}
		if s != qs {
			q, qs = sdk.NewQueue(s, queueName), s
		}
		c.consume(s, q)
	}
}

func (c *coordClient) consume(s *sdk.Session, q *sdk.Queue) {
	lease := s.Lease()
	ctx, cancel := c.waitCtx()
	call := c.co.h.now()
	item, err := q.Dequeue(ctx)
	ret := c.co.h.now()
	cancel()
	if err != nil {
		if !c.stopped() && !errors.Is(err, context.DeadlineExceeded) {
			c.co.failed("dequeue", err)
		}
		// The sdk may still pick up an item handed to the abandoned wait
		// and give it to the next Dequeue; a fresh session keeps each
		// delivery tied to the call that got it.
		c.drop("consumer")
		c.pause()
		return
	}
	d := queueOp{Kind: queueDequeue, Client: c.id, Lease: lease, Payload: string(item.GetPayload()), ID: item.GetId(),
		Deliveries: item.GetDeliveries(), Outcome: outcomeOK, Call: call, Return: ret}
	c.co.queueOp(d)
	switch p := c.rng.IntN(100); {
	case p < abandonPercent:
		c.co.count("items abandoned (lease revoked)")
		c.drop("consumer")
		return
	case p < abandonPercent+expirePercent:
		c.co.count("items abandoned (lease left to expire)")
		s.Orphan()
		c.sess = nil
		return
	}
	c.ack(d)
}

// ack acknowledges the item of delivery d through the generated client
// (the sdk's Ack counts a retry that finds the item gone as a success) and
// records the outcome.
func (c *coordClient) ack(d queueOp) {
	ctx, cancel := c.opCtx()
	call := c.co.h.now()
	_, err := catalogpb.NewQueueClient(c.cli.Conn()).Ack(ctx, &catalogpb.AckRequest{Queue: queueName, Id: d.ID, Lease: d.Lease})
	ret := c.co.h.now()
	cancel()
	a := queueOp{Kind: queueAck, Client: c.id, Lease: d.Lease, Payload: d.Payload, ID: d.ID, Deliveries: d.Deliveries, Outcome: outcomeOK, Call: call, Return: ret}
	if err != nil {
		err = rawError(err)
		c.co.failed("ack", err)
		a.Outcome, a.Err = outcomeUnknown, err.Error()
		if refused(err) {
			a.Outcome = outcomeNotApplied
		}
	}
	c.co.queueOp(a)
	if a.Outcome == outcomeUnknown {
		c.drop("consumer")
	}
}

// drain takes every item left in the queue once the workloads stopped and
// the cluster recovered, acknowledging each (the operations join the
// history), until the queue has neither ready items nor items in flight
// (those of leases left to expire come back when they do). It gives up
// when ctx ends.
func (co *coordination) drain(ctx context.Context) error {
	if co.cfg.Producers == 0 {
		return nil
	}
	cli, err := newCoordClient(co.endpoints, co.cluster)
	if err != nil {
		return fmt.Errorf("drain the queue: %w", err)
	}
	defer cli.Close()
	c := &coordClient{co: co, id: -1, cli: cli}
	defer c.drop("drain")
	queue := catalogpb.NewQueueClient(cli.Conn())
	var lastErr error
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("drain the queue: %w (last error: %v)", context.Cause(ctx), lastErr)
		}
		opCtx, cancel := context.WithTimeout(ctx, co.cfg.OpTimeout)
		st, err := queue.Status(opCtx, &catalogpb.QueueStatusRequest{Queue: queueName})
		cancel()
		if err != nil {
			lastErr = rawError(err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if st.GetStatus().GetDepth() == 0 && len(st.GetStatus().GetInFlight()) == 0 {
			return nil
		}
		if st.GetStatus().GetDepth() == 0 {
			// Only items of leases not expired yet: wait for them.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s := c.session("drain")
		if s == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		opCtx, cancel = context.WithTimeout(ctx, co.cfg.OpTimeout)
		call := co.h.now()
		resp, err := queue.Dequeue(opCtx, &catalogpb.DequeueRequest{Queue: queueName, Lease: s.Lease(), WaiterId: rand.Uint64() | 1, Try: true})
		ret := co.h.now()
		cancel()
		if err != nil {
			lastErr = rawError(err)
			c.drop("drain")
			continue
		}
		item := resp.GetItem()
		if item == nil {
			continue
		}
		d := queueOp{Kind: queueDequeue, Client: -1, Lease: s.Lease(), Payload: string(item.GetPayload()), ID: item.GetId(),
			Deliveries: item.GetDeliveries(), Outcome: outcomeOK, Call: call, Return: ret}
		co.queueOp(d)
		co.count("items drained")
		c.ack(d)
	}
}

// check runs the coordination checks on what the workloads recorded and
// returns the problems, and a summary for the log.
func (co *coordination) check() ([]string, string) {
	co.mu.Lock()
	defer co.mu.Unlock()
	var problems []string
	if co.cfg.Lockers > 0 {
		problems = append(problems, checkHolds("mutex "+lockName, co.lockFacts)...)
		if co.counts["fenced writes accepted"] == 0 {
			problems = append(problems, "no fenced write was accepted during the run: the lock workload checked nothing")
		}
	}
	if co.cfg.Campaigners > 0 {
		problems = append(problems, checkHolds("election "+electionName, co.electionFacts)...)
		if co.counts["elections won"] == 0 {
			problems = append(problems, "no campaign was won during the run: the election workload checked nothing")
		}
	}
	var qs queueStats
	if co.cfg.Producers > 0 {
		var qp []string
		qp, qs = checkQueue("queue "+queueName, co.queueOps)
		problems = append(problems, qp...)
		if qs.Acked == 0 {
			problems = append(problems, "no queue item was acknowledged during the run: the queue workload checked nothing")
		}
	}
	n := co.counts
	summary := fmt.Sprintf("lock: %d grants (%d lost before use), fenced writes %d accepted / %d refused, zombie writes %d accepted / %d refused, paused-holder writes %d accepted / %d refused, %d facts; "+
		"election: %d won, %d proclaims, %d resigned, %d revoked, %d left to expire, %d leaders observed, %d facts; "+
		"queue: %d enqueued (+%d unknown), %d delivered, %d redelivered, %d acked, %d maybe acked, %d drained, %d abandoned by revoke, %d by expiry; "+
		"sessions lost: %d lockers, %d campaigners, %d consumers",
		n["lock grants"], n["grants lost before use"], n["fenced writes accepted"], n["fenced writes refused"], n["zombie writes accepted"], n["zombie writes refused"],
		n["paused-holder writes accepted"], n["paused-holder writes refused"], len(co.lockFacts),
		n["elections won"], n["proclaims"], n["resignations"], n["leader leases revoked"], n["leader leases left to expire"], n["leaders observed"], len(co.electionFacts),
		qs.Enqueued, qs.EnqueueUnknown, qs.Delivered, qs.Redelivered, qs.Acked, qs.MaybeAcked, n["items drained"],
		n["items abandoned (lease revoked)"], n["items abandoned (lease left to expire)"],
		n["locker sessions lost"], n["campaigner sessions lost"], n["consumer sessions lost"])
	return problems, summary
}

// save writes what the workloads recorded to path as JSON, for reading
// after a failed run.
func (co *coordination) save(path string) error {
	co.mu.Lock()
	defer co.mu.Unlock()
	data, err := json.MarshalIndent(struct {
		Lock     []holdFact `json:"lock"`
		Election []holdFact `json:"election"`
		Queue    []queueOp  `json:"queue"`
	}{co.lockFacts, co.electionFacts, co.queueOps}, "", " ")
	if err != nil {
		return fmt.Errorf("encode the coordination records: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("save the coordination records: %w", err)
	}
	return nil
}
