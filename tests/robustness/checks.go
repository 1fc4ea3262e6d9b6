package robustness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
)

// clusterID returns the id of c's cluster, as its leader reports it.
func clusterID(ctx context.Context, c *framework.Cluster) (uint64, error) {
	leader := c.WaitLeader(ctx)
	st, err := c.Status(ctx, leader)
	if err != nil {
		return 0, fmt.Errorf("cluster id: %w", err)
	}
	if id := st.GetHeader().GetClusterId(); id != 0 {
		return id, nil
	}
	return 0, fmt.Errorf("cluster id: member %d reports cluster id 0", leader)
}

// A memberHash is one member's answer to Cluster.Hash.
type memberHash struct {
	member int
	addr   string
	resp   *catalogpb.HashResponse
	err    error
}

func (m memberHash) String() string {
	if m.err != nil {
		return fmt.Sprintf("member %d (%s): %v", m.member, m.addr, m.err)
	}
	return fmt.Sprintf("member %d (%s): applied %d, revision %d, hash %x, %d keys, events %d..%d (%d)",
		m.member, m.addr, m.resp.GetAppliedIndex(), m.resp.GetRevision(), m.resp.GetHash(), m.resp.GetKeys(),
		m.resp.GetEventsFirst(), m.resp.GetEventsLast(), m.resp.GetEventsCount())
}

// hashAll asks every member in addrs (member number -> client address) for
// its Cluster.Hash, once, on a connection to that member alone.
func hashAll(ctx context.Context, addrs map[int]string) []memberHash {
	members := make([]int, 0, len(addrs))
	for i := range addrs {
		members = append(members, i)
	}
	slices.Sort(members)
	out := make([]memberHash, len(members))
	for k, i := range members {
		out[k] = memberHash{member: i, addr: addrs[i]}
		out[k].resp, out[k].err = hashOf(ctx, addrs[i])
	}
	return out
}

func hashOf(ctx context.Context, addr string) (*catalogpb.HashResponse, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := catalogpb.NewClusterClient(conn).Hash(ctx, &catalogpb.HashRequest{})
	if err != nil {
		return nil, fmt.Errorf("hash: %w", err)
	}
	return resp, nil
}

// waitConverged polls every member's Cluster.Hash until all answer with the
// same applied index, and returns that round of answers. Nobody writes
// while it waits, so equal applied indexes mean the members hold the state
// of the same log prefix.
func waitConverged(ctx context.Context, addrs map[int]string) ([]memberHash, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		round := hashAll(ctx, addrs)
		if converged(round) {
			return round, nil
		}
		select {
		case <-ctx.Done():
			views := make([]string, len(round))
			for k, m := range round {
				views[k] = m.String()
			}
			return round, fmt.Errorf("members did not reach the same applied index: %v; last answers: %s",
				context.Cause(ctx), strings.Join(views, "; "))
		case <-tick.C:
		}
	}
}

func converged(round []memberHash) bool {
	for _, m := range round {
		if m.err != nil || m.resp.GetAppliedIndex() != round[0].resp.GetAppliedIndex() {
			return false
		}
	}
	return len(round) > 0
}

// checkHashes compares converged members: all of the cluster with id
// cluster, the same revision and hash, and an events history without
// problems on each. It returns what is wrong.
func checkHashes(round []memberHash, cluster uint64) []string {
	var problems []string
	first := round[0]
	for _, m := range round {
		if got := m.resp.GetHeader().GetClusterId(); got != cluster {
			problems = append(problems, fmt.Sprintf("member %d (%s) answers for cluster %x, not %x", m.member, m.addr, got, cluster))
		}
		if m.resp.GetEventsProblem() != "" {
			problems = append(problems, fmt.Sprintf("member %d (%s) reports a problem in its events history: %s",
				m.member, m.addr, m.resp.GetEventsProblem()))
		}
		if m.resp.GetRevision() != first.resp.GetRevision() || !bytes.Equal(m.resp.GetHash(), first.resp.GetHash()) {
			problems = append(problems, fmt.Sprintf("members diverged at applied index %d: %s; %s",
				first.resp.GetAppliedIndex(), first, m))
		}
	}
	return problems
}

// finalReads reads every key linearizably through the given endpoints of
// the cluster with id cluster, retrying each read until it succeeds or ctx
// ends, and adds each answer to the history.
func finalReads(ctx context.Context, h *history, endpoints []string, cluster uint64, keys []string) (map[string]output, error) {
	cli, err := sdk.New(sdk.Config{Endpoints: endpoints, DialTimeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("client for the final reads over %v: %w", endpoints, err)
	}
	defer cli.Close()
	rec := h.recorder()
	final := map[string]output{}
	for _, key := range keys {
		var lastErr error
		for {
			if ctx.Err() != nil {
				return final, fmt.Errorf("final read of %s: %w (last error: %v)", key, context.Cause(ctx), lastErr)
			}
			in := input{Kind: opGet, Key: key}
			opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			call := h.now()
			out, err := execute(opCtx, cli, cluster, in)
			cancel()
			if err == nil {
				rec.record(call, in, out)
				final[key] = out
				break
			}
			lastErr = err
			time.Sleep(100 * time.Millisecond)
		}
	}
	return final, nil
}

// An ackedWrite is a write the server acknowledged as having changed a key.
type ackedWrite struct {
	in  input
	rev int64
}

func (w ackedWrite) String() string {
	if w.in.Kind == opDelete {
		return fmt.Sprintf("delete(%s) at revision %d", w.in.Key, w.rev)
	}
	return fmt.Sprintf("%v(%s, %s) at revision %d", w.in.Kind, w.in.Key, w.in.Value, w.rev)
}

// checkAcknowledged checks the final state against the acknowledged writes,
// independently of the linearizability checker and with plainer messages:
// no two acknowledged writes produced the same revision; each key's final
// value is the one of its last acknowledged write or of a later write whose
// outcome is unknown; a key is absent only if its last acknowledged write
// was a delete or a delete of unknown outcome could have come after it.
func checkAcknowledged(ops []porcupine.Operation, final map[string]output) []string {
	var problems []string
	byRev := map[int64]ackedWrite{}
	last := map[string]ackedWrite{}
	mayHaveWritten := map[string]bool{} // key + "\x00" + value of writes acknowledged or unknown
	unknownDelete := map[string]bool{}
	for _, op := range ops {
		in, out := op.Input.(input), op.Output.(output)
		if !in.Kind.writes() {
			continue
		}
		if out.Outcome == outcomeUnknown {
			if in.Kind == opDelete {
				unknownDelete[in.Key] = true
			} else {
				mayHaveWritten[in.Key+"\x00"+in.Value] = true
			}
			continue
		}
		if out.Outcome != outcomeOK {
			continue
		}
		changed := in.Kind == opPut || ((in.Kind == opCAS || in.Kind == opFenced) && out.Succeeded) || (in.Kind == opDelete && out.Deleted > 0)
		if !changed {
			continue
		}
		w := ackedWrite{in: in, rev: out.Revision}
		if in.Kind != opDelete {
			mayHaveWritten[in.Key+"\x00"+in.Value] = true
		}
		if other, ok := byRev[w.rev]; ok {
			problems = append(problems, fmt.Sprintf("two acknowledged writes produced revision %d: %s and %s", w.rev, other, w))
		}
		byRev[w.rev] = w
		if w.rev > last[in.Key].rev {
			last[in.Key] = w
		}
	}
	keys := make([]string, 0, len(final))
	for k := range final {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		got := final[key]
		w, acked := last[key]
		if got.Found && !mayHaveWritten[key+"\x00"+got.Value] {
			problems = append(problems, fmt.Sprintf("key %s ends with value %s (mod revision %d), which no acknowledged or possibly applied write wrote",
				key, got.Value, got.ModRevision))
			continue
		}
		if !acked {
			continue
		}
		if got.Revision < w.rev {
			problems = append(problems, fmt.Sprintf("final read of %s answered at revision %d, before acknowledged %s", key, got.Revision, w))
		}
		switch {
		case got.Found && got.ModRevision < w.rev:
			problems = append(problems, fmt.Sprintf("lost write: key %s ends with %s at mod revision %d, older than acknowledged %s",
				key, got.Value, got.ModRevision, w))
		case got.Found && got.ModRevision == w.rev && (w.in.Kind == opDelete || got.Value != w.in.Value):
			problems = append(problems, fmt.Sprintf("lost write: key %s ends with %s at mod revision %d, but that revision is acknowledged %s",
				key, got.Value, got.ModRevision, w))
		case !got.Found && w.in.Kind != opDelete && !unknownDelete[key]:
			problems = append(problems, fmt.Sprintf("lost write: key %s is absent at the end, but acknowledged %s was never followed by a delete",
				key, w))
		}
	}
	return problems
}

// checkLinearizable runs porcupine over the history with a timeout. On a
// violation, or when the checker ran out of time, it writes porcupine's
// visualisation to dir/linearizability-<seed>.html and returns what it
// found; it returns "" when the history is linearizable.
func checkLinearizable(ops []porcupine.Operation, timeout time.Duration, annotations []porcupine.Annotation, dir string, seed int64) string {
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	if res == porcupine.Ok {
		return ""
	}
	info.AddAnnotations(annotations)
	path := filepath.Join(dir, fmt.Sprintf("linearizability-%d.html", seed))
	saved := "saved its visualisation to " + path
	if err := os.MkdirAll(dir, 0o755); err != nil {
		saved = fmt.Sprintf("could not save the visualisation: %v", err)
	} else if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
		saved = fmt.Sprintf("could not save the visualisation to %s: %v", path, err)
	}
	if res == porcupine.Unknown {
		return fmt.Sprintf("linearizability NOT CHECKED: porcupine did not finish within %v on %d operations, so this run proves nothing either way; %s",
			timeout, len(ops), saved)
	}
	return fmt.Sprintf("history is NOT linearizable (porcupine, %d operations, %v): keys %s; %s",
		len(ops), time.Since(start).Round(time.Millisecond), strings.Join(illegalKeys(ops, timeout), ", "), saved)
}

// illegalKeys names the keys whose own history is not linearizable.
func illegalKeys(ops []porcupine.Operation, timeout time.Duration) []string {
	var keys []string
	for _, part := range partitionByKey(ops) {
		if porcupine.CheckOperationsTimeout(kvModel, part, timeout) == porcupine.Illegal {
			keys = append(keys, part[0].Input.(input).Key)
		}
	}
	return keys
}
