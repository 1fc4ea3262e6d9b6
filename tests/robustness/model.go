package robustness

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// An opKind is what a client asked the store to do.
type opKind uint8

const (
	opPut opKind = iota + 1
	opGet
	// opCAS puts a new value if the key holds an expected value (or, with
	// ExpectAbsent, does not exist): a Txn of one compare and one put.
	opCAS
	opDelete
	// opFenced puts a new value if the fencing token Token still holds the
	// lock Lock: a Txn comparing Fence(Lock, Token), then putting. Whether
	// the compare holds depends on the lock, not on the key, so the model
	// allows either answer; the fencing checks (checkHolds) judge it.
	opFenced
)

func (k opKind) String() string {
	switch k {
	case opPut:
		return "put"
	case opGet:
		return "get"
	case opCAS:
		return "cas"
	case opDelete:
		return "delete"
	case opFenced:
		return "fenced-put"
	}
	return "op(" + strconv.Itoa(int(k)) + ")"
}

// writes reports whether the operation may change the store.
func (k opKind) writes() bool { return k != opGet }

// An input is one operation as the client sent it: the porcupine input.
type input struct {
	Kind opKind
	Key  string
	// Value is the value a put or cas writes. Every value written in a run
	// is unique, so a value read identifies the write that stored it.
	Value string
	// Expect is the value a cas requires the key to hold.
	Expect string
	// ExpectAbsent makes a cas require the key not to exist instead.
	ExpectAbsent bool
	// Lock and Token are a fenced put's guard: the put happens only if
	// Token is a current holder's of the lock named Lock.
	Lock  string `json:",omitempty"`
	Token uint64 `json:",omitempty"`
}

// An outcome says what the client learnt about an operation.
type outcome uint8

const (
	// outcomeOK: the server answered; the output fields hold its answer.
	outcomeOK outcome = iota + 1
	// outcomeUnknown: the call failed in a way that leaves open whether a
	// write took effect (timeout, connection lost, server stopped mid-way).
	// Such an operation may be linearized at any point after its call, or
	// never (its return time is the end of the history).
	outcomeUnknown
	// outcomeNotApplied: the server said the write was not applied (the
	// cluster had no leader). The model holds it to that.
	outcomeNotApplied
)

// An output is what came back: the porcupine output.
type output struct {
	Outcome outcome
	// Err is the error of an unknown or not-applied operation, for the report.
	Err string
	// Revision is the response header's revision: for a write that changed
	// the store, the revision it produced; otherwise the store's revision
	// when the request was served.
	Revision int64
	// Found, Value and ModRevision are a get's answer.
	Found       bool
	Value       string
	ModRevision int64
	// Succeeded is a cas's or a fenced put's answer: whether its compare
	// held.
	Succeeded bool
	// Deleted is a delete's answer: how many keys it removed (0 or 1).
	Deleted int64
	// Member and Term are the answering member's id and raft term, for the
	// report only: the model does not look at them.
	Member uint64
	Term   uint64
}

// A keyState is the model's state of one key (the model is partitioned by
// key). Revisions are global to the store, so through one key the model sees
// only bounds on them, and checks those bounds: a write's revision is above
// every revision observed before it, a read's revision is at least every one
// observed before it.
type keyState struct {
	Exists bool
	Value  string
	// ModRevision is the revision of the write that stored Value; 0 when
	// that write's outcome was unknown and nobody has read the key since.
	ModRevision int64
	// ModAbove, while ModRevision is 0, is the Floor when the write of
	// unknown outcome was linearized: its revision is above it.
	ModAbove int64
	// Floor is the highest store revision observed through this key so far
	// in the linearization: the store is at Floor or later.
	Floor int64
}

// kvModel is the sequential specification of the key-value store the load
// drives: put, linearizable get, cas and delete on single keys.
var kvModel = porcupine.Model{
	Partition:      partitionByKey,
	PartitionEvent: partitionEventsByKey,
	Init:           func() any { return keyState{} },
	Step: func(state, in, out any) (bool, any) {
		return step(state.(keyState), in.(input), out.(output))
	},
	Equal: func(a, b any) bool { return a.(keyState) == b.(keyState) },
	Hash: func(state any) uint64 {
		s := state.(keyState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%t|%s|%d|%d|%d", s.Exists, s.Value, s.ModRevision, s.ModAbove, s.Floor)
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string { return describeOperation(in.(input), out.(output)) },
	DescribeState:     func(state any) string { return describeState(state.(keyState)) },
}

// step applies one operation to s: whether the answer out is possible for in
// in state s, and the state after it.
func step(s keyState, in input, out output) (bool, keyState) {
	switch out.Outcome {
	case outcomeNotApplied:
		return in.Kind.writes(), s
	case outcomeUnknown:
		return in.Kind.writes(), applyUnknown(s, in)
	}
	switch in.Kind {
	case opGet:
		if out.Revision < s.Floor {
			return false, s
		}
		next := s
		next.Floor = out.Revision
		if !s.Exists {
			return !out.Found, next
		}
		if !out.Found || out.Value != s.Value || out.ModRevision > out.Revision {
			return false, s
		}
		if s.ModRevision != 0 {
			return out.ModRevision == s.ModRevision, next
		}
		// The write of unknown outcome that stored the value came after
		// the revisions observed before it.
		if out.ModRevision <= s.ModAbove {
			return false, s
		}
		next.ModRevision, next.ModAbove = out.ModRevision, 0
		return true, next
	case opPut:
		return put(s, in.Value, out.Revision)
	case opCAS:
		if !out.Succeeded {
			if casHolds(s, in) || out.Revision < s.Floor {
				return false, s
			}
			next := s
			next.Floor = out.Revision
			return true, next
		}
		if !casHolds(s, in) {
			return false, s
		}
		return put(s, in.Value, out.Revision)
	case opFenced:
		if !out.Succeeded {
			// The fence did not hold: nothing written, the store was at
			// out.Revision.
			if out.Revision < s.Floor {
				return false, s
			}
			next := s
			next.Floor = out.Revision
			return true, next
		}
		return put(s, in.Value, out.Revision)
	case opDelete:
		if out.Deleted == 0 {
			if s.Exists || out.Revision < s.Floor {
				return false, s
			}
			next := s
			next.Floor = out.Revision
			return true, next
		}
		if !s.Exists || out.Deleted != 1 || out.Revision <= s.Floor {
			return false, s
		}
		return true, keyState{Floor: out.Revision}
	}
	return false, s
}

// put is a write of value that produced revision rev.
func put(s keyState, value string, rev int64) (bool, keyState) {
	if rev <= s.Floor {
		return false, s
	}
	return true, keyState{Exists: true, Value: value, ModRevision: rev, Floor: rev}
}

// applyUnknown applies a write whose answer was lost, linearized here: it
// did what it asked, at a revision nobody knows yet.
func applyUnknown(s keyState, in input) keyState {
	switch in.Kind {
	case opPut, opFenced:
		// A fenced put whose fence did not hold is linearized after
		// everything else (its return is the end of the history), where it
		// changes nothing anyone observes.
		return keyState{Exists: true, Value: in.Value, ModAbove: s.Floor, Floor: s.Floor}
	case opCAS:
		if casHolds(s, in) {
			return keyState{Exists: true, Value: in.Value, ModAbove: s.Floor, Floor: s.Floor}
		}
	case opDelete:
		return keyState{Floor: s.Floor}
	}
	return s
}

func casHolds(s keyState, in input) bool {
	if in.ExpectAbsent {
		return !s.Exists
	}
	return s.Exists && s.Value == in.Expect
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(input).Key
		byKey[k] = append(byKey[k], op)
	}
	return sortedValues(byKey)
}

func partitionEventsByKey(history []porcupine.Event) [][]porcupine.Event {
	// A return event carries the output only, so the key of an operation
	// comes from its call event, matched by Id.
	keyOf := map[int]string{}
	byKey := map[string][]porcupine.Event{}
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			keyOf[ev.Id] = ev.Value.(input).Key
		}
		k := keyOf[ev.Id]
		byKey[k] = append(byKey[k], ev)
	}
	return sortedValues(byKey)
}

// sortedValues returns the groups in key order, so the partitions (and the
// visualisation) come out the same on every run.
func sortedValues[T any](groups map[string][]T) [][]T {
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare)
	out := make([][]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, groups[k])
	}
	return out
}

func describeOperation(in input, out output) string {
	var call string
	switch in.Kind {
	case opPut:
		call = fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
	case opGet:
		call = fmt.Sprintf("get(%s)", in.Key)
	case opCAS:
		expect := in.Expect
		if in.ExpectAbsent {
			expect = "<absent>"
		}
		call = fmt.Sprintf("cas(%s, %s -> %s)", in.Key, expect, in.Value)
	case opDelete:
		call = fmt.Sprintf("delete(%s)", in.Key)
	case opFenced:
		call = fmt.Sprintf("fenced-put(%s, %s, lock %s token %d)", in.Key, in.Value, in.Lock, in.Token)
	default:
		call = fmt.Sprintf("%v(%s)", in.Kind, in.Key)
	}
	switch out.Outcome {
	case outcomeUnknown:
		return call + " -> unknown: " + out.Err
	case outcomeNotApplied:
		return call + " -> not applied: " + out.Err
	}
	by := fmt.Sprintf(" (member %x, term %d)", out.Member, out.Term)
	switch in.Kind {
	case opGet:
		if !out.Found {
			return fmt.Sprintf("%s -> <absent> @%d%s", call, out.Revision, by)
		}
		return fmt.Sprintf("%s -> %s (mod %d) @%d%s", call, out.Value, out.ModRevision, out.Revision, by)
	case opCAS, opFenced:
		if !out.Succeeded {
			return fmt.Sprintf("%s -> failed @%d%s", call, out.Revision, by)
		}
		return fmt.Sprintf("%s -> ok @%d%s", call, out.Revision, by)
	case opDelete:
		return fmt.Sprintf("%s -> deleted %d @%d%s", call, out.Deleted, out.Revision, by)
	}
	return fmt.Sprintf("%s -> ok @%d%s", call, out.Revision, by)
}

func describeState(s keyState) string {
	if !s.Exists {
		return fmt.Sprintf("<absent>, store at ≥%d", s.Floor)
	}
	mod := fmt.Sprintf(">%d", s.ModAbove)
	if s.ModRevision != 0 {
		mod = strconv.FormatInt(s.ModRevision, 10)
	}
	return fmt.Sprintf("%s (mod %s), store at ≥%d", s.Value, mod, s.Floor)
}
