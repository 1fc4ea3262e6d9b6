package robustness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

// Hand-made facts: lease a = 0xa, b = 0xb, c = 0xc; times in nanoseconds
// on the history's clock.
func granted(token uint64, lease, rev, call, ret int64) holdFact {
	return holdFact{Kind: factGranted, Token: token, Lease: lease, Revision: rev, Call: call, Return: ret, What: "lock"}
}

func grantedBy(token uint64, lease, rev, call, ret int64) holdFact {
	return holdFact{Kind: factGrantedBy, Token: token, Lease: lease, Revision: rev, Call: call, Return: ret, What: "lock"}
}

func heldAt(token uint64, lease, rev int64) holdFact {
	return holdFact{Kind: factHeld, Token: token, Lease: lease, Revision: rev, What: "fenced write"}
}

func goneAt(token uint64, lease, rev int64) holdFact {
	return holdFact{Kind: factGone, Token: token, Lease: lease, Revision: rev, What: "unlock"}
}

// wantProblems checks that got has one problem containing each of want (in
// any order), and none when want is empty.
func wantProblems(t *testing.T, got, want []string) {
	t.Helper()
	if len(want) == 0 {
		if len(got) != 0 {
			t.Fatalf("problems = %q, want none", got)
		}
		return
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem contains %q; problems: %q", w, got)
		}
	}
}

func TestCheckHolds(t *testing.T) {
	// A clean mutex history: client a holds token 1 (granted at 10, a
	// fenced write at 11, unlocked at 12, which grants token 2 to b); b
	// writes at 13 and its lease is revoked at 14; a's retried Lock is
	// answered the same token again; token 3 is known only by the header
	// revision of its answer and written at 21.
	clean := []holdFact{
		granted(1, 0xa, 10, 0, 100),
		granted(1, 0xa, 10, 150, 160), // a retry of the same lease, answered again
		heldAt(1, 0xa, 11),
		heldAt(1, 0xa, 11), // unlock at 12: held at 11
		goneAt(1, 0xa, 12),
		granted(2, 0xb, 12, 50, 200),
		heldAt(2, 0xb, 13),
		{Kind: factGone, Lease: 0xb, Revision: 14, What: "revoke"},
		grantedBy(3, 0xc, 20, 210, 300),
		heldAt(3, 0xc, 21),
		// A write with token 1 refused later is not a fact; a fenced write
		// by b's stale token after the revoke would be, and is tested below.
	}
	tests := []struct {
		name  string
		facts []holdFact
		want  []string
	}{
		{name: "clean", facts: clean},
		{
			name: "stale-token write accepted after a newer grant",
			facts: []holdFact{
				granted(1, 0xa, 10, 0, 10),
				granted(2, 0xb, 15, 5, 20),
				heldAt(1, 0xa, 16),
			},
			want: []string{"token 1 held at revision 16 after the newer token 2 was held at revision 15"},
		},
		{
			name: "stale-token write accepted after the lease was revoked",
			facts: []holdFact{
				granted(1, 0xa, 10, 0, 10),
				{Kind: factGone, Lease: 0xa, Revision: 12, What: "revoke"},
				heldAt(1, 0xa, 13),
			},
			want: []string{"token 1 held at revision 13, after its lease a was revoked at revision 12"},
		},
		{
			name: "stale-token write accepted at the revision of the unlock",
			facts: []holdFact{
				granted(1, 0xa, 10, 0, 10),
				goneAt(1, 0xa, 12),
				heldAt(1, 0xa, 12),
			},
			want: []string{"token 1 held at revision 12, after it was released at revision 12"},
		},
		{
			name: "stale-token write accepted after a newer grant known by its answer's revision",
			facts: []holdFact{
				grantedBy(1, 0xa, 10, 0, 10),
				grantedBy(2, 0xb, 15, 5, 20),
				heldAt(1, 0xa, 15),
			},
			want: []string{"token 1 held at revision 15, although the newer token 2 was granted by revision 15"},
		},
		{
			name: "two holders at one revision",
			facts: []holdFact{
				granted(1, 0xa, 10, 0, 10),
				heldAt(1, 0xa, 12),
				granted(2, 0xb, 12, 5, 20),
			},
			want: []string{"two tokens held at revision 12"},
		},
		{
			name: "tokens decrease in grant order",
			facts: []holdFact{
				granted(5, 0xa, 10, 0, 10),
				granted(4, 0xb, 12, 5, 20),
			},
			want: []string{"tokens do not increase in grant order"},
		},
		{
			name: "two grants at one revision",
			facts: []holdFact{
				granted(5, 0xa, 10, 0, 10),
				granted(6, 0xb, 10, 5, 20),
			},
			want: []string{"two tokens granted at one revision"},
		},
		{
			name: "a token granted twice",
			facts: []holdFact{
				granted(5, 0xa, 10, 0, 10),
				granted(5, 0xa, 14, 20, 30),
			},
			want: []string{"token 5 granted twice"},
		},
		{
			name: "a token of two leases",
			facts: []holdFact{
				grantedBy(5, 0xa, 10, 0, 10),
				grantedBy(5, 0xb, 11, 0, 10),
			},
			want: []string{"token 5 belongs to two leases"},
		},
		{
			name: "a later grant gets a lower token",
			facts: []holdFact{
				grantedBy(5, 0xa, 40, 0, 100),
				grantedBy(3, 0xb, 50, 200, 300),
			},
			want: []string{"token 5 was answered (t=0.000s) before a later grant was asked for"},
		},
		{
			// An election: leader 1 elected at 10 proclaims at 20, but
			// leader 2 was elected at 15.
			name: "two leaders at once",
			facts: []holdFact{
				{Kind: factGranted, Token: 1, Lease: 0xa, Revision: 10, Call: 0, Return: 10, What: "campaign"},
				{Kind: factGranted, Token: 2, Lease: 0xb, Revision: 15, Call: 0, Return: 30, What: "campaign"},
				{Kind: factHeld, Token: 1, Lease: 0xa, Revision: 20, What: "proclaim"},
			},
			want: []string{"token 1 held at revision 20 after the newer token 2 was held at revision 15"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblems(t, checkHolds("lock", tt.facts), tt.want)
		})
	}
}

func TestCheckHoldsBoundsReports(t *testing.T) {
	var facts []holdFact
	facts = append(facts, granted(100, 0xa, 10, 0, 10))
	for k := range 3 * maxProblems {
		facts = append(facts, heldAt(uint64(1+k), 0xb, int64(11+k)))
	}
	got := checkHolds("lock", facts)
	if len(got) != maxProblems+1 {
		t.Fatalf("%d problems, want %d and a count of the rest: %q", len(got), maxProblems+1, got)
	}
	if last := got[len(got)-1]; !strings.Contains(last, "and 20 more") {
		t.Errorf("last problem = %q, want the count of the ones left out", last)
	}
}

func enqueued(client int, payload string, id uint64, call, ret int64) queueOp {
	return queueOp{Kind: queueEnqueue, Client: client, Payload: payload, ID: id, Outcome: outcomeOK, Call: call, Return: ret}
}

func dequeued(lease int64, payload string, id uint64, delivery, call, ret int64) queueOp {
	return queueOp{Kind: queueDequeue, Lease: lease, Payload: payload, ID: id, Deliveries: delivery, Outcome: outcomeOK, Call: call, Return: ret}
}

func ackOp(lease int64, payload string, id uint64, delivery int64, o outcome, call, ret int64) queueOp {
	return queueOp{Kind: queueAck, Lease: lease, Payload: payload, ID: id, Deliveries: delivery, Outcome: o, Call: call, Return: ret}
}

func TestCheckQueue(t *testing.T) {
	// A clean history: p1 is handed to a, whose lease dies before its Ack
	// (refused), then to b, which acknowledges it; p2 goes to b; p3's
	// enqueue has an unknown outcome and was never handed out; p4's Ack
	// has an unknown outcome; id 1 is reused by p5 once the queue was
	// empty.
	clean := []queueOp{
		enqueued(0, "p1", 1, 0, 10),
		enqueued(0, "p2", 2, 11, 20),
		dequeued(0xa, "p1", 1, 1, 5, 21),
		dequeued(0xb, "p1", 1, 2, 30, 40),
		ackOp(0xa, "p1", 1, 1, outcomeNotApplied, 35, 45),
		ackOp(0xb, "p1", 1, 2, outcomeOK, 41, 50),
		dequeued(0xb, "p2", 2, 1, 51, 60),
		ackOp(0xb, "p2", 2, 1, outcomeOK, 61, 70),
		{Kind: queueEnqueue, Payload: "p3", Outcome: outcomeUnknown, Call: 71, Return: 80},
		enqueued(0, "p4", 3, 81, 90),
		dequeued(0xc, "p4", 3, 1, 91, 100),
		ackOp(0xc, "p4", 3, 1, outcomeUnknown, 101, 110),
		enqueued(0, "p5", 1, 111, 120),
		dequeued(0xc, "p5", 1, 1, 121, 130),
		ackOp(0xc, "p5", 1, 1, outcomeOK, 131, 140),
	}
	tests := []struct {
		name string
		ops  []queueOp
		want []string
	}{
		{name: "clean", ops: clean},
		{
			name: "an item acknowledged twice",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 1, 1, 11, 20),
				ackOp(0xa, "p1", 1, 1, outcomeOK, 21, 30),
				dequeued(0xb, "p1", 1, 2, 31, 40),
				ackOp(0xb, "p1", 1, 2, outcomeOK, 41, 50),
			},
			want: []string{"item p1 acknowledged 2 times"},
		},
		{
			name: "an item lost after a hand-out",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 1, 1, 11, 20),
				ackOp(0xa, "p1", 1, 1, outcomeNotApplied, 21, 30),
			},
			want: []string{"item p1 lost: enqueue(p1) -> id 1 [client 0, t=0.000..0.000s] acknowledged, handed out 1 times"},
		},
		{
			name: "an item lost before any hand-out",
			ops:  []queueOp{enqueued(0, "p1", 1, 0, 10)},
			want: []string{"item p1 lost", "never handed out"},
		},
		{
			name: "an item handed out that nobody enqueued",
			ops: []queueOp{
				{Kind: queueEnqueue, Payload: "p1", Outcome: outcomeNotApplied, Err: "no leader"},
				dequeued(0xa, "p1", 1, 1, 11, 20),
			},
			want: []string{"item p1 handed out but never enqueued"},
		},
		{
			name: "an item handed to two consumers at once",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 1, 1, 11, 20),
				dequeued(0xb, "p1", 1, 1, 12, 21),
				ackOp(0xb, "p1", 1, 1, outcomeOK, 22, 30),
			},
			want: []string{"item p1 handed to two consumers as delivery 1"},
		},
		{
			name: "an item handed out again with the same deliveries counter",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 1, 2, 11, 20),
				dequeued(0xa, "p1", 1, 2, 21, 30),
				ackOp(0xa, "p1", 1, 2, outcomeOK, 31, 40),
			},
			want: []string{"handed out again without its deliveries counter growing"},
		},
		{
			name: "an item acknowledged by the consumer it was taken from",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 1, 1, 11, 20),
				dequeued(0xb, "p1", 1, 2, 21, 30),
				ackOp(0xa, "p1", 1, 1, outcomeOK, 31, 40),
			},
			want: []string{"item p1 acknowledged by lease a after it was handed to lease b"},
		},
		{
			name: "an item handed out under another id",
			ops: []queueOp{
				enqueued(0, "p1", 1, 0, 10),
				dequeued(0xa, "p1", 7, 1, 11, 20),
				ackOp(0xa, "p1", 7, 1, outcomeOK, 21, 30),
			},
			want: []string{"item p1 enqueued as id 1 but handed out as id 7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := checkQueue("queue", tt.ops)
			wantProblems(t, got, tt.want)
		})
	}
	_, st := checkQueue("queue", clean)
	if want := (queueStats{Enqueued: 4, EnqueueUnknown: 1, Delivered: 5, Redelivered: 1, Acked: 3, MaybeAcked: 1}); st != want {
		t.Errorf("stats of the clean history = %+v, want %+v", st, want)
	}
}

func fencedIn(key, value string, token uint64) input {
	return input{Kind: opFenced, Key: key, Value: value, Lock: "l", Token: token}
}

// TestModelFenced checks the model of a fenced put: it writes when its
// fence held, and otherwise changes nothing.
func TestModelFenced(t *testing.T) {
	tests := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{
			name: "linearizable: accepted, refused and unknown fenced puts",
			history: []porcupine.Operation{
				op(0, 0, 10, fencedIn("r", "c0-1", 1), casOK(5)),
				op(1, 11, 20, fencedIn("r", "c1-1", 1), casFailed(6)),
				op(1, 21, 30, getIn("r"), read("c0-1", 5, 6)),
				op(2, 31, never, fencedIn("r", "c2-1", 2), unknown),
				op(0, 40, 50, getIn("r"), read("c2-1", 8, 8)),
				op(0, 51, 60, fencedIn("r", "c0-2", 3), casOK(9)),
				op(1, 61, 70, getIn("r"), read("c0-2", 9, 9)),
			},
			want: porcupine.Ok,
		},
		{
			name: "a refused fenced put is read",
			history: []porcupine.Operation{
				op(0, 0, 10, fencedIn("r", "c0-1", 1), casFailed(5)),
				op(1, 11, 20, getIn("r"), read("c0-1", 5, 6)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "an accepted fenced put is lost",
			history: []porcupine.Operation{
				op(0, 0, 10, fencedIn("r", "c0-1", 1), casOK(5)),
				op(1, 11, 20, getIn("r"), readAbsent(6)),
			},
			want: porcupine.Illegal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(kvModel, tt.history, 10*time.Second); got != tt.want {
				t.Fatalf("check = %s, want %s", got, tt.want)
			}
		})
	}
	// checkAcknowledged counts an accepted fenced put as a write.
	ops := []porcupine.Operation{op(0, 0, 10, fencedIn("r", "c0-1", 1), casOK(5))}
	wantProblems(t, checkAcknowledged(ops, map[string]output{"r": readAbsent(6)}), []string{"lost write: key r is absent"})
	wantProblems(t, checkAcknowledged(ops, map[string]output{"r": read("c0-1", 5, 6)}), nil)
	refused := []porcupine.Operation{op(0, 0, 10, fencedIn("r", "c0-1", 1), casFailed(5))}
	wantProblems(t, checkAcknowledged(refused, map[string]output{"r": read("c0-1", 5, 6)}), []string{"which no acknowledged or possibly applied write wrote"})
}

// TestRawError checks how the workloads read the errors of the generated
// clients: by the reason catalogd attaches, else by the gRPC code, and
// which of them count as certainly not applied.
func TestRawError(t *testing.T) {
	withReason := func(code codes.Code, reason catalogpb.ErrorReason) error {
		st, err := status.New(code, "from the server").WithDetails(&errdetails.ErrorInfo{Domain: "catalogd", Reason: reason.String()})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	tests := []struct {
		name     string
		err      error
		is       error
		refused  bool
		expected bool
	}{
		{"item not handed to the lease", withReason(codes.NotFound, catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND), sdk.ErrItemNotFound, true, true},
		{"stale token", withReason(codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_NOT_HELD), sdk.ErrNotHeld, true, true},
		{"lease gone", withReason(codes.NotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND), sdk.ErrLeaseNotFound, true, true},
		{"no leader", withReason(codes.Unavailable, catalogpb.ErrorReason_NO_LEADER), sdk.ErrNoLeader, true, true},
		{"server timed out", withReason(codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT), sdk.ErrTimeout, false, true},
		{"superseded", withReason(codes.Aborted, catalogpb.ErrorReason_WAIT_SUPERSEDED), sdk.ErrWaitSuperseded, false, false},
		{"connection lost", status.Error(codes.Unavailable, "connection reset"), sdk.ErrUnavailable, false, true},
		{"deadline", status.Error(codes.DeadlineExceeded, "deadline"), context.DeadlineExceeded, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := rawError(tt.err)
			if !errors.Is(err, tt.is) {
				t.Errorf("rawError(%v) = %v, want it to match %v", tt.err, err, tt.is)
			}
			if got := refused(err); got != tt.refused {
				t.Errorf("refused(%v) = %t, want %t", err, got, tt.refused)
			}
			if got := expectedCoordFailure(err); got != tt.expected {
				t.Errorf("expectedCoordFailure(%v) = %t, want %t", err, got, tt.expected)
			}
		})
	}
}
