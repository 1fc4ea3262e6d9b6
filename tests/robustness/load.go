package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/catalogd/catalogd/sdk"
)

// A loadConfig shapes the traffic of a run.
type loadConfig struct {
	// Clients is the number of concurrent clients, each with its own
	// sdk.Client over every endpoint.
	Clients int
	// Keys is the size of the key space; a small one makes clients collide.
	Keys int
	// OpTimeout bounds each operation.
	OpTimeout time.Duration
}

// failurePause is how long a load client waits after a failed operation.
const failurePause = 20 * time.Millisecond

var defaultLoad = loadConfig{Clients: 8, Keys: 8, OpTimeout: 2 * time.Second}

// keyName returns the name of key number i of the key space.
func keyName(i int) string { return fmt.Sprintf("robustness/k%d", i) }

// keys returns every key of the key space.
func (cfg loadConfig) keys() []string {
	ks := make([]string, cfg.Keys)
	for i := range ks {
		ks[i] = keyName(i)
	}
	return ks
}

// A load is K clients running operations against a cluster and recording
// them into a history, until stopped.
type load struct {
	cfg loadConfig
	// cluster is the id of the cluster under test.
	cluster  uint64
	h        *history
	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	clients  []*sdk.Client

	mu sync.Mutex
	// unexpected counts errors that no fault explains (anything but a lost
	// connection, a timeout, no leader or a stopping server), by message.
	unexpected map[string]int
}

// startLoad starts cfg.Clients clients over the endpoints of the cluster
// with id cluster. Client k draws its operations from a generator seeded
// with (seed, k), so a seed replays the same sequence of choices (not the
// same timing).
func startLoad(h *history, endpoints []string, cluster uint64, seed int64, cfg loadConfig) (*load, error) {
	l := &load{cfg: cfg, cluster: cluster, h: h, stopc: make(chan struct{}), unexpected: map[string]int{}}
	for k := range cfg.Clients {
		cli, err := newLoadClient(endpoints)
		if err != nil {
			l.closeClients()
			return nil, fmt.Errorf("client %d over %v: %w", k, endpoints, err)
		}
		l.clients = append(l.clients, cli)
	}
	for k, cli := range l.clients {
		c := &loadClient{
			l:     l,
			id:    k,
			cli:   cli,
			rng:   rand.New(rand.NewPCG(uint64(seed), uint64(k))),
			rec:   h.recorder(),
			known: map[string]knownValue{},
		}
		l.wg.Go(c.run)
	}
	return l, nil
}

// newLoadClient returns a client whose calls wait for a connection to some
// member instead of failing at once when none is up: while every member is
// down a client then spends its operation timeout on one operation instead
// of piling up operations of unknown outcome, each of which the
// linearizability checker must try at every point of the history.
func newLoadClient(endpoints []string) (*sdk.Client, error) {
	return sdk.New(sdk.Config{
		Endpoints:   endpoints,
		DialTimeout: time.Second,
		DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.WaitForReady(true))},
	})
}

// stop lets every operation in flight finish (each is bounded by
// OpTimeout), stops the clients and closes them. Later calls do nothing.
func (l *load) stop() {
	l.stopOnce.Do(func() {
		close(l.stopc)
		l.wg.Wait()
		l.closeClients()
	})
}

func (l *load) closeClients() {
	for _, cli := range l.clients {
		cli.Close()
	}
}

// unexpectedErrors describes the errors no fault explains, most frequent
// first; empty if there were none.
func (l *load) unexpectedErrors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	msgs := make([]string, 0, len(l.unexpected))
	for m := range l.unexpected {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return l.unexpected[msgs[i]] > l.unexpected[msgs[j]] })
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%d× %s", l.unexpected[m], m)
	}
	return out
}

func (l *load) noteUnexpected(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unexpected[oneLine(err.Error())]++
}

// A knownValue is what a client last saw a key hold; its cas operations
// expect it, so some succeed and some lose a race.
type knownValue struct {
	exists bool
	value  string
}

type loadClient struct {
	l     *load
	id    int
	cli   *sdk.Client
	rng   *rand.Rand
	rec   *recorder
	seq   int
	known map[string]knownValue
}

func (c *loadClient) run() {
	for {
		select {
		case <-c.l.stopc:
			return
		default:
		}
		c.once()
	}
}

// once runs one operation: 40% linearizable get, 30% put, 20% cas, 10%
// delete, on a uniformly chosen key.
func (c *loadClient) once() {
	key := keyName(c.rng.IntN(c.l.cfg.Keys))
	var in input
	switch p := c.rng.IntN(100); {
	case p < 40:
		in = input{Kind: opGet, Key: key}
	case p < 70:
		in = input{Kind: opPut, Key: key, Value: c.nextValue()}
	case p < 90:
		k := c.known[key]
		in = input{Kind: opCAS, Key: key, Value: c.nextValue(), Expect: k.value, ExpectAbsent: !k.exists}
	default:
		in = input{Kind: opDelete, Key: key}
	}
	// The operation's context is not tied to stopping the load: an
	// operation in flight when the load stops runs to its answer, so fewer
	// outcomes are unknown.
	ctx, cancel := context.WithTimeout(context.Background(), c.l.cfg.OpTimeout)
	defer cancel()
	call := c.l.h.now()
	out, err := execute(ctx, c.cli, c.l.cluster, in)
	if err == nil {
		c.rec.record(call, in, out)
		c.learn(in, out)
		return
	}
	if !expectedFailure(err) {
		c.l.noteUnexpected(err)
	}
	// A failed read tells nothing; a failed write may have happened.
	if in.Kind.writes() {
		out = output{Outcome: writeFailure(err), Err: err.Error()}
		c.rec.record(call, in, out)
		c.learn(in, out)
	}
	// A member that is down refuses at once: pause rather than spin.
	time.Sleep(failurePause)
}

// nextValue returns a value no other write of the run uses.
func (c *loadClient) nextValue() string {
	c.seq++
	return fmt.Sprintf("c%d-%d", c.id, c.seq)
}

// learn updates what the client knows of the key after an operation.
func (c *loadClient) learn(in input, out output) {
	if out.Outcome != outcomeOK {
		if in.Kind.writes() && out.Outcome == outcomeUnknown {
			delete(c.known, in.Key)
		}
		return
	}
	switch in.Kind {
	case opGet:
		c.known[in.Key] = knownValue{exists: out.Found, value: out.Value}
	case opPut:
		c.known[in.Key] = knownValue{exists: true, value: in.Value}
	case opCAS:
		if out.Succeeded {
			c.known[in.Key] = knownValue{exists: true, value: in.Value}
		}
	case opDelete:
		c.known[in.Key] = knownValue{}
	}
}

// errOtherCluster is the error of an operation answered by a server whose
// response header names another cluster than the one under test.
var errOtherCluster = errors.New("answered by a member of another cluster")

// execute sends one operation and returns the server's answer; an answer
// from another cluster than cluster (by the response header's cluster id) is
// an error wrapping errOtherCluster, and changed nothing in this one.
func execute(ctx context.Context, cli *sdk.Client, cluster uint64, in input) (output, error) {
	out, got, err := send(ctx, cli, in)
	if err == nil && got != cluster {
		return output{}, fmt.Errorf("%w: cluster id %x, the cluster under test is %x (a member that forgot its cluster, or, with members on loopback ports, another test's member on the port of a stopped one)",
			errOtherCluster, got, cluster)
	}
	return out, err
}

// send sends one operation and returns the answer and the cluster id of
// the server that gave it.
func send(ctx context.Context, cli *sdk.Client, in input) (output, uint64, error) {
	switch in.Kind {
	case opGet:
		resp, err := cli.Get(ctx, in.Key)
		if err != nil {
			return output{}, 0, err
		}
		out := output{Outcome: outcomeOK, Revision: resp.GetHeader().GetRevision(), Member: resp.GetHeader().GetMemberId(), Term: resp.GetHeader().GetRaftTerm()}
		if kvs := resp.GetKvs(); len(kvs) > 0 {
			out.Found = true
			out.Value = string(kvs[0].GetValue())
			out.ModRevision = kvs[0].GetModRevision()
		}
		return out, resp.GetHeader().GetClusterId(), nil
	case opPut:
		resp, err := cli.Put(ctx, in.Key, in.Value)
		if err != nil {
			return output{}, 0, err
		}
		return output{Outcome: outcomeOK, Revision: resp.GetHeader().GetRevision(), Member: resp.GetHeader().GetMemberId(), Term: resp.GetHeader().GetRaftTerm()}, resp.GetHeader().GetClusterId(), nil
	case opCAS:
		cond := sdk.Compare(sdk.Value(in.Key), "=", in.Expect)
		if in.ExpectAbsent {
			cond = sdk.Compare(sdk.Exists(in.Key), "=", false)
		}
		resp, err := cli.NewTxn(ctx).If(cond).Then(sdk.OpPut(in.Key, in.Value)).Commit()
		if err != nil {
			return output{}, 0, err
		}
		return output{Outcome: outcomeOK, Revision: resp.GetHeader().GetRevision(), Member: resp.GetHeader().GetMemberId(), Term: resp.GetHeader().GetRaftTerm(), Succeeded: resp.GetSucceeded()}, resp.GetHeader().GetClusterId(), nil
	case opDelete:
		resp, err := cli.Delete(ctx, in.Key)
		if err != nil {
			return output{}, 0, err
		}
		return output{Outcome: outcomeOK, Revision: resp.GetHeader().GetRevision(), Member: resp.GetHeader().GetMemberId(), Term: resp.GetHeader().GetRaftTerm(), Deleted: resp.GetDeleted()}, resp.GetHeader().GetClusterId(), nil
	}
	return output{}, 0, fmt.Errorf("unknown operation kind %v", in.Kind)
}

// writeFailure classifies a failed write. Only NO_LEADER promises the write
// was not proposed (the sdk retries only it for that reason, so a write that
// ends with it, even cut short by its context while waiting to retry, was
// refused on every attempt), and a write another cluster answered did not
// reach this one; every other failure may have happened after the write was
// committed.
func writeFailure(err error) outcome {
	if errors.Is(err, sdk.ErrNoLeader) || errors.Is(err, errOtherCluster) || errors.Is(err, sdk.ErrWrongCluster) {
		return outcomeNotApplied
	}
	return outcomeUnknown
}

// expectedFailure reports whether err is one the faults of this suite
// explain: a member unreachable, stopped or without a leader, or an
// operation that ran out of time.
func expectedFailure(err error) bool {
	for _, sentinel := range []error{
		sdk.ErrUnavailable, sdk.ErrNoLeader, sdk.ErrStopped, sdk.ErrTimeout,
		context.DeadlineExceeded, context.Canceled,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// oneLine shortens an error message for a log line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
