package robustness

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// maxProblems bounds how many problems of one kind a coordination check
// reports; the count of the others is added.
const maxProblems = 10

// A factKind says what a holdFact establishes about a fencing token.
type factKind uint8

const (
	// factGranted: the token was granted at Revision exactly (Lock's or
	// Campaign's answer names the grant's revision), so it was held then.
	factGranted factKind = iota + 1
	// factGrantedBy: the token was granted at Revision or before (the
	// answer's header revision, when the grant's own is not known).
	factGrantedBy
	// factHeld: the token was a current holder's at Revision (a fenced
	// write accepted at Revision; a Proclaim applied at Revision; an Unlock
	// or Resign applied at Revision+1).
	factHeld
	// factGone: the token was not held at Revision or any later revision
	// (an Unlock or Resign of it applied at Revision, or its lease revoked
	// at Revision). A token is never held again once released: a new grant
	// takes a new token. A fact with Token 0 is about every token of Lease.
	factGone
)

func (k factKind) String() string {
	switch k {
	case factGranted:
		return "granted at"
	case factGrantedBy:
		return "granted by"
	case factHeld:
		return "held at"
	case factGone:
		return "released at"
	}
	return fmt.Sprintf("fact(%d)", k)
}

// A holdFact is one thing a server's answer proved about a fencing token of
// one lock or election name. The workloads record them; checkHolds checks
// that together they describe a lock with one holder at a time whose
// tokens increase.
type holdFact struct {
	Kind     factKind
	Token    uint64
	Lease    int64
	Revision int64
	// Client is the load client that learnt it.
	Client int
	// Call and Return bound the operation on the history's clock; set for
	// grants, whose real-time order is checked against their tokens.
	Call, Return int64
	// What names the operation, for the report.
	What string
}

func (f holdFact) String() string {
	lease := ""
	if f.Lease != 0 {
		lease = fmt.Sprintf(" of lease %x", f.Lease)
	}
	token := fmt.Sprintf("token %d", f.Token)
	if f.Token == 0 {
		token = "every token"
	}
	return fmt.Sprintf("%s%s %s revision %d (client %d: %s)", token, lease, f.Kind, f.Revision, f.Client, f.What)
}

// problemList collects problems, keeping the first maxProblems of each kind.
type problemList struct {
	out    []string
	counts map[string]int
}

func (p *problemList) add(kind, format string, args ...any) {
	if p.counts == nil {
		p.counts = map[string]int{}
	}
	p.counts[kind]++
	if p.counts[kind] <= maxProblems {
		p.out = append(p.out, fmt.Sprintf(format, args...))
	}
}

func (p *problemList) list() []string {
	kinds := make([]string, 0, len(p.counts))
	for k, n := range p.counts {
		if n > maxProblems {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	out := p.out
	for _, k := range kinds {
		out = append(out, fmt.Sprintf("… and %d more problems of the kind %q", p.counts[k]-maxProblems, k))
	}
	return out
}

// checkHolds checks the facts recorded about one lock or election name of
// one holder at a time (a mutex, an election) and returns what is wrong:
//
//   - a token is granted to one lease only, at one revision only;
//   - tokens strictly increase in grant order: with the revisions of the
//     grants, and with real time (a grant answered before another was asked
//     for has the lower token);
//   - at most one token is held at any revision, and the holders follow
//     each other in token order: ordered by revision, the tokens proven
//     held never decrease (a fenced write accepted with a token older than
//     one already held is a stale write);
//   - no token is held at or after a revision where it was released, and
//     none is held at or after a revision by which a higher token was
//     granted.
func checkHolds(name string, facts []holdFact) []string {
	var p problemList
	leaseOf := map[uint64]holdFact{}
	grantedAt := map[uint64]holdFact{}
	var grants, held, gone, bounds []holdFact
	for _, f := range facts {
		if f.Token != 0 && f.Lease != 0 {
			if first, ok := leaseOf[f.Token]; !ok {
				leaseOf[f.Token] = f
			} else if first.Lease != f.Lease {
				p.add("token of two leases", "%s: token %d belongs to two leases: %s; %s", name, f.Token, first, f)
			}
		}
		switch f.Kind {
		case factGranted:
			if first, ok := grantedAt[f.Token]; ok && first.Revision != f.Revision {
				p.add("token granted twice", "%s: token %d granted twice: %s; %s", name, f.Token, first, f)
			} else if !ok {
				grantedAt[f.Token] = f
			}
			grants = append(grants, f)
			held = append(held, f)
			bounds = append(bounds, f)
		case factGrantedBy:
			grants = append(grants, f)
			bounds = append(bounds, f)
		case factHeld:
			held = append(held, f)
		case factGone:
			gone = append(gone, f)
		}
	}

	// Grant order by revision: one grant per revision, tokens increasing.
	exact := slices.Collect(maps.Values(grantedAt))
	slices.SortFunc(exact, func(a, b holdFact) int {
		return cmp.Or(cmp.Compare(a.Revision, b.Revision), cmp.Compare(a.Token, b.Token))
	})
	for k := 1; k < len(exact); k++ {
		a, b := exact[k-1], exact[k]
		if a.Revision == b.Revision {
			p.add("two grants at one revision", "%s: two tokens granted at one revision: %s; %s", name, a, b)
		} else if b.Token < a.Token {
			p.add("tokens out of grant order", "%s: tokens do not increase in grant order: %s, then %s", name, a, b)
		}
	}

	// Grant order by real time: a grant answered before another was asked
	// for has a lower token (or is the same grant, answered again to a
	// retry of the same lease).
	if len(grants) > 1 {
		byReturn := slices.Clone(grants)
		slices.SortFunc(byReturn, func(a, b holdFact) int { return cmp.Compare(a.Return, b.Return) })
		// best[k] is the grant of highest token among byReturn[:k+1].
		best := make([]holdFact, len(byReturn))
		for k, f := range byReturn {
			best[k] = f
			if k > 0 && best[k-1].Token > f.Token {
				best[k] = best[k-1]
			}
		}
		for _, b := range grants {
			n := sort.Search(len(byReturn), func(k int) bool { return byReturn[k].Return >= b.Call })
			if n == 0 {
				continue
			}
			if a := best[n-1]; a.Token > b.Token {
				p.add("tokens out of real-time order", "%s: token %d was answered (t=%.3fs) before a later grant was asked for (t=%.3fs), which got the lower token: %s; %s",
					name, a.Token, seconds(a.Return), seconds(b.Call), a, b)
			}
		}
	}

	// One holder at a time, in token order.
	slices.SortFunc(held, func(a, b holdFact) int {
		return cmp.Or(cmp.Compare(a.Revision, b.Revision), cmp.Compare(b.Token, a.Token))
	})
	var top holdFact // the fact of the highest token held so far
	for k, f := range held {
		if k == 0 || f.Token >= top.Token {
			if f.Token > top.Token {
				top = f
			}
			continue
		}
		if f.Revision == top.Revision {
			p.add("two holders", "%s: two tokens held at revision %d: %s; %s", name, f.Revision, top, f)
		} else {
			p.add("stale token held", "%s: token %d held at revision %d after the newer token %d was held at revision %d (two holders at once, or a stale token accepted): %s; %s",
				name, f.Token, f.Revision, top.Token, top.Revision, top, f)
		}
	}

	// Nothing held after its release.
	goneFrom := map[uint64]holdFact{}
	goneLease := map[int64]holdFact{}
	for _, f := range gone {
		if f.Token == 0 {
			if g, ok := goneLease[f.Lease]; !ok || f.Revision < g.Revision {
				goneLease[f.Lease] = f
			}
			continue
		}
		if g, ok := goneFrom[f.Token]; !ok || f.Revision < g.Revision {
			goneFrom[f.Token] = f
		}
	}
	for _, f := range held {
		if g, ok := goneFrom[f.Token]; ok && f.Revision >= g.Revision {
			p.add("held after release", "%s: token %d held at revision %d, after it was released at revision %d: %s; %s",
				name, f.Token, f.Revision, g.Revision, g, f)
		}
		lease := f.Lease
		if l, ok := leaseOf[f.Token]; ok {
			lease = l.Lease
		}
		if g, ok := goneLease[lease]; ok && lease != 0 && f.Revision >= g.Revision {
			p.add("held after release", "%s: token %d held at revision %d, after its lease %x was revoked at revision %d: %s; %s",
				name, f.Token, f.Revision, lease, g.Revision, g, f)
		}
	}

	// Nothing held at or after the grant of a higher token. (An exact
	// grant is also a held fact, so the holder check above covers it; this
	// adds the grants known only by an upper bound.)
	slices.SortFunc(bounds, func(a, b holdFact) int { return cmp.Compare(b.Token, a.Token) })
	// low[k] is the bound of lowest revision among bounds[:k+1] (tokens
	// from the highest down).
	low := make([]holdFact, len(bounds))
	for k, f := range bounds {
		low[k] = f
		if k > 0 && low[k-1].Revision < f.Revision {
			low[k] = low[k-1]
		}
	}
	for _, f := range held {
		// The bounds of tokens above f.Token are bounds[:n].
		n := sort.Search(len(bounds), func(k int) bool { return bounds[k].Token <= f.Token })
		if n == 0 {
			continue
		}
		if g := low[n-1]; g.Kind == factGrantedBy && g.Revision <= f.Revision {
			p.add("held after a newer grant", "%s: token %d held at revision %d, although the newer token %d was granted by revision %d (a stale token accepted): %s; %s",
				name, f.Token, f.Revision, g.Token, g.Revision, g, f)
		}
	}
	return p.list()
}

// seconds converts a time on the history's clock to seconds.
func seconds(t int64) float64 { return float64(t) / 1e9 }

// A queueOpKind is what a queue client did.
type queueOpKind uint8

const (
	queueEnqueue queueOpKind = iota + 1
	queueDequeue
	queueAck
)

func (k queueOpKind) String() string {
	switch k {
	case queueEnqueue:
		return "enqueue"
	case queueDequeue:
		return "dequeue"
	case queueAck:
		return "ack"
	}
	return fmt.Sprintf("queue-op(%d)", k)
}

// A queueOp is one operation of the queue workload. Payloads are unique in
// a run, so a payload names an item (item ids may be reused once the queue
// was empty).
type queueOp struct {
	Kind queueOpKind
	// Client is the load client; Lease the consumer's lease (dequeue, ack).
	Client int
	Lease  int64
	// Payload is the item's payload: the one enqueued, the one a dequeue
	// got, the one of the item acknowledged.
	Payload string
	// ID is the item id an enqueue got, a dequeue got, or an ack sent.
	ID uint64
	// Deliveries is the item's deliveries counter as a dequeue got it; for
	// an ack, that of the dequeue that handed it.
	Deliveries int64
	// Outcome: outcomeOK the server did it; outcomeNotApplied the server
	// refused it (an ack of an item not handed to the lease, a NO_LEADER);
	// outcomeUnknown it may or may not have happened. Dequeues are recorded
	// only when they got an item.
	Outcome outcome
	Err     string
	// Call and Return are on the history's clock.
	Call, Return int64
}

func (o queueOp) String() string {
	var s string
	switch o.Kind {
	case queueEnqueue:
		s = fmt.Sprintf("enqueue(%s)", o.Payload)
		if o.Outcome == outcomeOK {
			s += fmt.Sprintf(" -> id %d", o.ID)
		}
	case queueDequeue:
		s = fmt.Sprintf("dequeue by lease %x -> %s (id %d, delivery %d)", o.Lease, o.Payload, o.ID, o.Deliveries)
	case queueAck:
		s = fmt.Sprintf("ack(%d: %s, delivery %d) by lease %x", o.ID, o.Payload, o.Deliveries, o.Lease)
	}
	switch o.Outcome {
	case outcomeUnknown:
		s += " -> unknown: " + o.Err
	case outcomeNotApplied:
		s += " -> refused: " + o.Err
	}
	return fmt.Sprintf("%s [client %d, t=%.3f..%.3fs]", s, o.Client, seconds(o.Call), seconds(o.Return))
}

// queueStats counts what checkQueue saw.
type queueStats struct {
	Enqueued, EnqueueUnknown, Delivered, Redelivered, Acked, MaybeAcked int
}

// checkQueue checks the operations of the queue workload, drain included,
// and returns what is wrong:
//
//   - every item handed out was enqueued (by an acknowledged enqueue or one
//     of unknown outcome), under the id its enqueue got;
//   - no item is acknowledged twice (two Acks that succeeded);
//   - no item is lost: every acknowledged enqueue's item was acknowledged
//     by an Ack that succeeded, or one of unknown outcome;
//   - an item is handed to one consumer at a time: its deliveries counter
//     grows with every hand-out, and an Ack succeeds only for the consumer
//     it was last handed to.
func checkQueue(name string, ops []queueOp) ([]string, queueStats) {
	var p problemList
	var st queueStats
	enq := map[string]queueOp{}
	maybeEnq := map[string]bool{}
	deliveries := map[string][]queueOp{}
	acked := map[string][]queueOp{}
	maybeAcked := map[string]bool{}
	var payloads []string
	for _, o := range ops {
		switch o.Kind {
		case queueEnqueue:
			switch o.Outcome {
			case outcomeOK:
				if first, ok := enq[o.Payload]; ok {
					p.add("enqueued twice", "%s: payload %s enqueued twice (the workload's payloads are unique): %s; %s", name, o.Payload, first, o)
					continue
				}
				enq[o.Payload] = o
				payloads = append(payloads, o.Payload)
				st.Enqueued++
			case outcomeUnknown:
				maybeEnq[o.Payload] = true
				st.EnqueueUnknown++
			}
		case queueDequeue:
			deliveries[o.Payload] = append(deliveries[o.Payload], o)
			st.Delivered++
		case queueAck:
			switch o.Outcome {
			case outcomeOK:
				acked[o.Payload] = append(acked[o.Payload], o)
			case outcomeUnknown:
				maybeAcked[o.Payload] = true
			}
		}
	}
	for payload, ds := range deliveries {
		e, ok := enq[payload]
		switch {
		case !ok && !maybeEnq[payload]:
			p.add("phantom item", "%s: item %s handed out but never enqueued: %s", name, payload, ds[0])
		case ok:
			for _, d := range ds {
				if d.ID != e.ID {
					p.add("wrong id", "%s: item %s enqueued as id %d but handed out as id %d: %s; %s", name, payload, e.ID, d.ID, e, d)
				}
			}
		}
		if len(ds) > 1 {
			st.Redelivered++
		}
		for _, a := range ds {
			for _, b := range ds {
				if a.Lease != b.Lease && a.Deliveries == b.Deliveries && a.Call < b.Call {
					p.add("handed out twice", "%s: item %s handed to two consumers as delivery %d: %s; %s", name, payload, a.Deliveries, a, b)
				}
				if a.Return < b.Call && a.Deliveries >= b.Deliveries {
					p.add("deliveries counter", "%s: item %s handed out again without its deliveries counter growing: %s, then %s", name, payload, a, b)
				}
			}
		}
	}
	for payload, as := range acked {
		if len(as) > 1 {
			descs := make([]string, len(as))
			for k, a := range as {
				descs[k] = a.String()
			}
			p.add("acknowledged twice", "%s: item %s acknowledged %d times: %s", name, payload, len(as), strings.Join(descs, "; "))
		}
		for _, a := range as {
			if _, ok := enq[payload]; !ok && !maybeEnq[payload] {
				p.add("phantom item", "%s: item %s acknowledged but never enqueued: %s", name, payload, a)
			}
			// Handed to another consumer, as a later delivery, before this
			// Ack was sent: the Ack must have been refused.
			for _, d := range deliveries[payload] {
				if d.Lease != a.Lease && d.Deliveries > a.Deliveries && d.Return < a.Call {
					p.add("ack by a former consumer", "%s: item %s acknowledged by lease %x after it was handed to lease %x: %s; %s",
						name, payload, a.Lease, d.Lease, d, a)
				}
			}
		}
	}
	for _, payload := range payloads {
		switch {
		case len(acked[payload]) > 0:
			st.Acked++
		case maybeAcked[payload]:
			st.MaybeAcked++
		default:
			e := enq[payload]
			ds := deliveries[payload]
			if len(ds) == 0 {
				p.add("lost", "%s: item %s lost: %s acknowledged, never handed out", name, payload, e)
			} else {
				p.add("lost", "%s: item %s lost: %s acknowledged, handed out %d times (last: %s), never acknowledged", name, payload, e, len(ds), ds[len(ds)-1])
			}
		}
	}
	return p.list(), st
}
