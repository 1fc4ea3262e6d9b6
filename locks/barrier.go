package locks

import (
	"fmt"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func getBarrier(tx *bbolt.Tx, name string) (*catalogpb.BarrierState, error) {
	st := &catalogpb.BarrierState{}
	found, err := getProto(tx.Bucket(BarriersBucket), []byte(name), st)
	if err != nil || !found {
		return nil, err
	}
	return st, nil
}

// GetBarrier returns a barrier, or nil if it does not exist.
func GetBarrier(tx *bbolt.Tx, name string) (*catalogpb.BarrierState, error) {
	if err := ValidateName("barrier", name); err != nil {
		return nil, err
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, err
	}
	return getBarrier(tx, name)
}

// ListBarriers returns up to limit barriers (0: DefaultListLimit) whose
// names start with prefix and come after after, in name order, and whether
// more follow.
func ListBarriers(tx *bbolt.Tx, prefix, after string, limit int) ([]*catalogpb.BarrierState, bool, error) {
	n, err := listLimit(limit)
	if err != nil {
		return nil, false, err
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, false, err
	}
	var out []*catalogpb.BarrierState
	more := false
	err = scanNames(tx.Bucket(BarriersBucket), prefix, after, func(k, v []byte) (bool, error) {
		if len(out) == n {
			more = true
			return false, nil
		}
		st := &catalogpb.BarrierState{}
		if err := proto.Unmarshal(v, st); err != nil {
			return false, fmt.Errorf("locks: stored barrier %s is corrupt: %w", quoteBytes(k), err)
		}
		out = append(out, st)
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

func barrierLeases(st *catalogpb.BarrierState) []int64 {
	if st == nil {
		return nil
	}
	if st.Kind == catalogpb.BarrierKind_BARRIER_KIND_SIMPLE {
		if st.Lease != 0 {
			return []int64{st.Lease}
		}
		return nil
	}
	var out []int64
	for _, p := range st.Participants {
		out = append(out, p.Lease)
	}
	return out
}

// commitBarrier stores st (nil: delete), the new state of a barrier whose
// state was prev, attaches and detaches its leases, and returns its event.
func commitBarrier(tx *bbolt.Tx, rev int64, name string, prev, st *catalogpb.BarrierState) ([]*catalogpb.Event, error) {
	if err := moveItems(tx, BarrierKind, name, barrierLeases(prev), barrierLeases(st)); err != nil {
		return nil, err
	}
	b := tx.Bucket(BarriersBucket)
	if st == nil {
		if err := b.Delete([]byte(name)); err != nil {
			return nil, fmt.Errorf("locks: delete barrier %s: %w", quote(name), err)
		}
		return []*catalogpb.Event{{
			Type:        catalogpb.Event_DELETE,
			Kind:        BarrierKind,
			Kv:          kvOf(name, 0, rev),
			PrevKv:      kvOf(name, prev.CreateRevision, prev.ModRevision),
			PrevBarrier: prev,
		}}, nil
	}
	st.ModRevision = rev
	if prev == nil {
		st.CreateRevision = rev
	}
	if err := putProto(b, []byte(name), st); err != nil {
		return nil, err
	}
	ev := &catalogpb.Event{
		Type:    catalogpb.Event_PUT,
		Kind:    BarrierKind,
		Kv:      kvOf(name, st.CreateRevision, st.ModRevision),
		Barrier: st,
	}
	if prev != nil {
		ev.PrevKv = kvOf(name, prev.CreateRevision, prev.ModRevision)
		ev.PrevBarrier = prev
	}
	return []*catalogpb.Event{ev}, nil
}

func applyBarrierSet(tx *bbolt.Tx, rev int64, req *catalogpb.BarrierSetRequest) (*catalogpb.BarrierSetResponse, []*catalogpb.Event, error) {
	if req.Lease != 0 {
		if err := checkLeaseExists(tx, req.Lease); err != nil {
			return nil, nil, err
		}
	}
	prev, err := getBarrier(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev != nil {
		if prev.Kind != catalogpb.BarrierKind_BARRIER_KIND_SIMPLE {
			return nil, nil, fmt.Errorf("%w: barrier %s is a %s barrier; Set is for SIMPLE barriers",
				ErrKindMismatch, quote(req.Name), barrierKindName(prev.Kind))
		}
		return &catalogpb.BarrierSetResponse{Token: prev.Token}, nil, nil
	}
	token, err := nextToken(tx)
	if err != nil {
		return nil, nil, err
	}
	st := &catalogpb.BarrierState{Name: req.Name, Kind: catalogpb.BarrierKind_BARRIER_KIND_SIMPLE, Lease: req.Lease, Token: token}
	evs, err := commitBarrier(tx, rev, req.Name, nil, st)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.BarrierSetResponse{Token: token}, evs, nil
}

func applyBarrierRelease(tx *bbolt.Tx, rev int64, req *catalogpb.BarrierReleaseRequest) (*catalogpb.BarrierReleaseResponse, []*catalogpb.Event, error) {
	prev, err := getBarrier(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return &catalogpb.BarrierReleaseResponse{}, nil, nil
	}
	if prev.Kind != catalogpb.BarrierKind_BARRIER_KIND_SIMPLE {
		return nil, nil, fmt.Errorf("%w: barrier %s is a %s barrier; Release is for SIMPLE barriers (a DOUBLE barrier ends when its participants Leave)",
			ErrKindMismatch, quote(req.Name), barrierKindName(prev.Kind))
	}
	evs, err := commitBarrier(tx, rev, req.Name, prev, nil)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.BarrierReleaseResponse{Released: true}, evs, nil
}

func findParticipant(st *catalogpb.BarrierState, leaseID int64) int {
	for i, p := range st.GetParticipants() {
		if p.Lease == leaseID {
			return i
		}
	}
	return -1
}

func applyBarrierEnter(tx *bbolt.Tx, rev int64, req *catalogpb.BarrierEnterRequest) (*catalogpb.BarrierEnterResponse, []*catalogpb.Event, error) {
	if err := checkLeaseExists(tx, req.Lease); err != nil {
		return nil, nil, err
	}
	prev, err := getBarrier(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	var st *catalogpb.BarrierState
	if prev == nil {
		st = &catalogpb.BarrierState{Name: req.Name, Kind: catalogpb.BarrierKind_BARRIER_KIND_DOUBLE, Count: req.Count}
	} else {
		if prev.Kind != catalogpb.BarrierKind_BARRIER_KIND_DOUBLE {
			return nil, nil, fmt.Errorf("%w: barrier %s is a %s barrier; Enter is for DOUBLE barriers",
				ErrKindMismatch, quote(req.Name), barrierKindName(prev.Kind))
		}
		if prev.Count != req.Count {
			return nil, nil, fmt.Errorf("%w: barrier %s expects %d participants; Enter gave count %d",
				ErrBarrierMismatch, quote(req.Name), prev.Count, req.Count)
		}
		if i := findParticipant(prev, req.Lease); i >= 0 {
			return &catalogpb.BarrierEnterResponse{State: prev, Token: prev.Participants[i].Token}, nil, nil
		}
		if prev.Open {
			return nil, nil, fmt.Errorf("%w: barrier %s is open (%d of %d participants entered at revision %d); no one may enter until every participant has left",
				ErrBarrierMismatch, quote(req.Name), len(prev.Participants), prev.Count, prev.OpenRevision)
		}
		st = proto.CloneOf(prev)
	}
	token, err := nextToken(tx)
	if err != nil {
		return nil, nil, err
	}
	st.Participants = append(st.Participants, &catalogpb.BarrierParticipant{Lease: req.Lease, Revision: rev, Token: token})
	if int64(len(st.Participants)) >= st.Count {
		st.Open = true
		st.OpenRevision = rev
	}
	evs, err := commitBarrier(tx, rev, req.Name, prev, st)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.BarrierEnterResponse{State: st, Token: token}, evs, nil
}

// leaveBarrier removes participant i from prev: the barrier is deleted
// when none remain.
func leaveBarrier(tx *bbolt.Tx, rev int64, prev *catalogpb.BarrierState, i int) ([]*catalogpb.Event, error) {
	if len(prev.Participants) == 1 {
		return commitBarrier(tx, rev, prev.Name, prev, nil)
	}
	st := proto.CloneOf(prev)
	st.Participants = append(st.Participants[:i:i], st.Participants[i+1:]...)
	return commitBarrier(tx, rev, prev.Name, prev, st)
}

func applyBarrierLeave(tx *bbolt.Tx, rev int64, req *catalogpb.BarrierLeaveRequest) (*catalogpb.BarrierLeaveResponse, []*catalogpb.Event, error) {
	prev, err := getBarrier(tx, req.Name)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return nil, nil, fmt.Errorf("%w: lease %d has not entered barrier %s; the barrier does not exist (Enter it first)", ErrNotEntered, req.Lease, quote(req.Name))
	}
	if prev.Kind != catalogpb.BarrierKind_BARRIER_KIND_DOUBLE {
		return nil, nil, fmt.Errorf("%w: barrier %s is a %s barrier; Leave is for DOUBLE barriers",
			ErrKindMismatch, quote(req.Name), barrierKindName(prev.Kind))
	}
	i := findParticipant(prev, req.Lease)
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: lease %d has not entered barrier %s; its participants are leases %v", ErrNotEntered, req.Lease, quote(req.Name), barrierLeases(prev))
	}
	evs, err := leaveBarrier(tx, rev, prev, i)
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.BarrierLeaveResponse{}, evs, nil
}

// deleteLeasedBarrier releases the simple barrier set with lease leaseID,
// or takes the lease out of a double barrier's participants.
func deleteLeasedBarrier(tx *bbolt.Tx, rev, leaseID int64, name string) ([]*catalogpb.Event, error) {
	prev, err := getBarrier(tx, name)
	if err != nil || prev == nil {
		return nil, err
	}
	switch prev.Kind {
	case catalogpb.BarrierKind_BARRIER_KIND_SIMPLE:
		if prev.Lease != leaseID {
			return nil, nil
		}
		return commitBarrier(tx, rev, name, prev, nil)
	case catalogpb.BarrierKind_BARRIER_KIND_DOUBLE:
		i := findParticipant(prev, leaseID)
		if i < 0 {
			return nil, nil
		}
		return leaveBarrier(tx, rev, prev, i)
	}
	return nil, nil
}
