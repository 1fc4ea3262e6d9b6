package httpapi

import (
	"encoding/base64"
	"strconv"
	"time"

	"github.com/graphql-go/graphql"

	"github.com/catalogd/catalogd/api/catalogpb"
)

const (
	defaultCoordLimit = 100
	// maxCoordLimit is the server's cap on one List page of locks,
	// barriers or queues.
	maxCoordLimit = 10000
)

// coordinationFields is the coordination area: locks (mutexes, RW locks,
// semaphores), elections, barriers and queues, read through the Lock,
// Barrier and Queue RPCs of the Backend.
func coordinationFields(b Backend, shared *sharedTypes) graphql.Fields {
	lockKind := protoEnum("LockKind", "What a lock name is used as.", catalogpb.LockKind_name, map[catalogpb.LockKind]string{
		catalogpb.LockKind_LOCK_KIND_UNSPECIFIED: "Not set; never stored.",
		catalogpb.LockKind_LOCK_KIND_MUTEX:       "One holder at a time.",
		catalogpb.LockKind_LOCK_KIND_RWLOCK:      "Many SHARED holders or one EXCLUSIVE holder.",
		catalogpb.LockKind_LOCK_KIND_SEMAPHORE:   "Holders take permits out of a fixed limit.",
		catalogpb.LockKind_LOCK_KIND_ELECTION:    "The holder is the leader.",
	})
	lockMode := protoEnum("LockMode", "How an owner holds or waits for a lock.", catalogpb.LockMode_name, map[catalogpb.LockMode]string{
		catalogpb.LockMode_LOCK_MODE_EXCLUSIVE: "Alone: a mutex, a semaphore's permits, an RW lock's writer, an election's candidate.",
		catalogpb.LockMode_LOCK_MODE_SHARED:    "With other SHARED holders: an RW lock's reader.",
	})
	barrierKind := protoEnum("BarrierKind", "What a barrier is.", catalogpb.BarrierKind_name, map[catalogpb.BarrierKind]string{
		catalogpb.BarrierKind_BARRIER_KIND_UNSPECIFIED: "Not set; never stored.",
		catalogpb.BarrierKind_BARRIER_KIND_SIMPLE:      "Set holds waiters back until Release.",
		catalogpb.BarrierKind_BARRIER_KIND_DOUBLE:      "Enter waits for count participants; Leave waits until all have left.",
	})

	type owner = *catalogpb.LockOwner
	ownerType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "LockOwner",
		Description: "A holder or waiter of a lock name.",
		Fields: graphql.Fields{
			"lease":   int64Field("The lease the hold or wait is attached to.", owner.GetLease),
			"token":   uint64Field(`The fencing token of the grant; "0" while waiting.`, owner.GetToken),
			"mode":    scalarField(lockMode, "EXCLUSIVE or SHARED.", func(o owner) any { return o.GetMode() }),
			"permits": int32Field("Permits taken (semaphores); 1 otherwise.", owner.GetPermits),
			"value": stringField("An election candidate's value as text; read valueBase64 for bytes that are not UTF-8.",
				func(o owner) string { return string(o.GetValue()) }),
			"valueBase64": stringField("The value, standard base64.", func(o owner) string { return base64.StdEncoding.EncodeToString(o.GetValue()) }),
			"revision":    int64Field("The revision at which it was granted (holders) or queued (waiters).", owner.GetRevision),
			"since":       timeField("When it was granted or queued, RFC 3339 in UTC (the proposer's clock).", owner.GetUnixNano),
			"waiterId":    uint64Field("The id of the call that queued or took this place.", owner.GetWaiterId),
		},
	})
	ownersField := func(desc string, get func(*catalogpb.LockState) []*catalogpb.LockOwner) *graphql.Field {
		return &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(ownerType))),
			Description: desc,
			Resolve: func(p graphql.ResolveParams) (any, error) {
				st, err := sourceAs[*catalogpb.LockState](p)
				if err != nil {
					return nil, err
				}
				return get(st), nil
			},
		}
	}
	type lock = *catalogpb.LockState
	lockType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Lock",
		Description: "A lock name with its holders and its FIFO of waiters (a name with neither does not exist).",
		Fields: graphql.Fields{
			"name":  stringField("The lock's name.", lock.GetName),
			"kind":  scalarField(lockKind, "What the name is used as.", func(l lock) any { return l.GetKind() }),
			"limit": int32Field("A semaphore's permits; 1 for a mutex or election, 0 for an RW lock.", lock.GetLimit),
			"holder": &graphql.Field{
				Type:        ownerType,
				Description: "The first holder, null when none (an RW lock or semaphore may have more: see holders).",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					l, err := sourceAs[lock](p)
					if err != nil || len(l.GetHolders()) == 0 {
						return nil, err
					}
					return l.GetHolders()[0], nil
				},
			},
			"token": &graphql.Field{
				Type:        graphql.String,
				Description: "The first holder's fencing token in decimal, null when none.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					l, err := sourceAs[lock](p)
					if err != nil || len(l.GetHolders()) == 0 {
						return nil, err
					}
					return strconv.FormatUint(l.GetHolders()[0].GetToken(), 10), nil
				},
			},
			"holders":        ownersField("Every holder, in grant order.", lock.GetHolders),
			"waiters":        ownersField("The waiters in arrival order: each is granted only after those before it.", lock.GetWaiters),
			"createRevision": int64Field("The revision at which the name came into use.", lock.GetCreateRevision),
			"modRevision":    int64Field("The revision that last changed it.", lock.GetModRevision),
		},
	})

	electionType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Election",
		Description: "An election: its leader (the holder of the name) and the candidates waiting.",
		Fields: graphql.Fields{
			"name": stringField("The election's name.", lock.GetName),
			"leader": &graphql.Field{
				Type:        graphql.String,
				Description: "The leader's lease in decimal, null while there is no leader.",
				Resolve:     leaderResolver(func(h owner) any { return strconv.FormatInt(h.GetLease(), 10) }),
			},
			"value": &graphql.Field{
				Type:        graphql.String,
				Description: "The leader's value as text, null while there is no leader.",
				Resolve:     leaderResolver(func(h owner) any { return string(h.GetValue()) }),
			},
			"valueBase64": &graphql.Field{
				Type:        graphql.String,
				Description: "The leader's value, standard base64; null while there is no leader.",
				Resolve:     leaderResolver(func(h owner) any { return base64.StdEncoding.EncodeToString(h.GetValue()) }),
			},
			"token": &graphql.Field{
				Type:        graphql.String,
				Description: "The leader's fencing token in decimal, null while there is no leader.",
				Resolve:     leaderResolver(func(h owner) any { return strconv.FormatUint(h.GetToken(), 10) }),
			},
			"revision": &graphql.Field{
				Type:        graphql.String,
				Description: "The revision at which the leader was elected, null while there is no leader.",
				Resolve:     leaderResolver(func(h owner) any { return strconv.FormatInt(h.GetRevision(), 10) }),
			},
			"candidates": int32Field("Candidates waiting to lead.", func(l lock) int64 { return int64(len(l.GetWaiters())) }),
		},
	})

	type participant = *catalogpb.BarrierParticipant
	participantType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "BarrierParticipant",
		Description: "A lease inside a double barrier.",
		Fields: graphql.Fields{
			"lease":    int64Field("The participant's lease.", participant.GetLease),
			"revision": int64Field("The revision at which it entered.", participant.GetRevision),
			"token":    uint64Field("The fencing token of its participation.", participant.GetToken),
		},
	})
	type barrier = *catalogpb.BarrierState
	barrierType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Barrier",
		Description: "A simple or double barrier.",
		Fields: graphql.Fields{
			"name":  stringField("The barrier's name.", barrier.GetName),
			"kind":  scalarField(barrierKind, "SIMPLE or DOUBLE.", func(b barrier) any { return b.GetKind() }),
			"lease": int64Field(`A simple barrier's lease ("0": none).`, barrier.GetLease),
			"token": uint64Field(`A simple barrier's fencing token of its setting ("0" for a double barrier).`, barrier.GetToken),
			"count": int32Field("A double barrier's participants expected.", barrier.GetCount),
			"participants": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(participantType))),
				Description: "A double barrier's participants inside, in order of entry.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					b, err := sourceAs[barrier](p)
					if err != nil {
						return nil, err
					}
					return b.GetParticipants(), nil
				},
			},
			"open":           boolField("A double barrier's count of participants entered; no one may enter until all left.", barrier.GetOpen),
			"openRevision":   int64Field(`The revision at which it opened ("0": not open).`, barrier.GetOpenRevision),
			"createRevision": int64Field("The revision that created it.", barrier.GetCreateRevision),
			"modRevision":    int64Field("The revision that last changed it.", barrier.GetModRevision),
		},
	})

	type item = *catalogpb.QueueItem
	itemType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "QueueItem",
		Description: "An item of a work queue.",
		Fields: graphql.Fields{
			"queue": stringField("The queue.", item.GetQueue),
			"id":    uint64Field("The item's sequence number in its queue.", item.GetId),
			"payload": stringField("The payload as text; read payloadBase64 for bytes that are not UTF-8.",
				func(i item) string { return string(i.GetPayload()) }),
			"payloadBase64":   stringField("The payload, standard base64.", func(i item) string { return base64.StdEncoding.EncodeToString(i.GetPayload()) }),
			"enqueueRevision": int64Field("The revision that enqueued it.", item.GetEnqueueRevision),
			"consumer":        int64Field(`The lease of the consumer it is handed to ("0": ready).`, item.GetConsumer),
			"waiterId":        uint64Field("The id of the Dequeue call it is handed to.", item.GetWaiterId),
			"deliveries":      int32Field("The times it was handed out.", item.GetDeliveries),
			"token":           uint64Field(`The fencing token of its current delivery ("0": ready); Fence on "queue/id".`, item.GetToken),
			"deliveredAt":     timeField("When it was last handed out, RFC 3339 in UTC.", item.GetDeliveredUnixNano),
		},
	})
	type consumer = *catalogpb.QueueConsumer
	consumerType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "QueueConsumer",
		Description: "A consumer waiting in Dequeue.",
		Fields: graphql.Fields{
			"lease":    int64Field("The consumer's lease.", consumer.GetLease),
			"waiterId": uint64Field("The id of its Dequeue call.", consumer.GetWaiterId),
			"revision": int64Field("The revision at which it began to wait.", consumer.GetRevision),
		},
	})
	type queue = *catalogpb.QueueStatus
	queueType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Queue",
		Description: "A work queue: items ready, items handed out and not acknowledged, consumers waiting.",
		Fields: graphql.Fields{
			"name":  stringField("The queue's name.", queue.GetQueue),
			"depth": int32Field("Items ready to be handed out.", queue.GetDepth),
			"inFlight": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(itemType))),
				Description: "Items handed to a consumer and not acknowledged yet, by id.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					q, err := sourceAs[queue](p)
					if err != nil {
						return nil, err
					}
					return q.GetInFlight(), nil
				},
			},
			"inFlightCount": int32Field("How many items are in flight.", func(q queue) int64 { return int64(len(q.GetInFlight())) }),
			"consumers": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(consumerType))),
				Description: "Consumers waiting in Dequeue, in arrival order.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					q, err := sourceAs[queue](p)
					if err != nil {
						return nil, err
					}
					return q.GetConsumers(), nil
				},
			},
			"nextId": uint64Field("The id the next Enqueue gets.", queue.GetNextId),
		},
	})

	consistencyArgConfig := &graphql.ArgumentConfig{
		Type:        shared.consistency,
		Description: "How the read is served; LINEARIZABLE when omitted.",
	}
	listArgs := func(what string) graphql.FieldConfigArgument {
		return graphql.FieldConfigArgument{
			"prefix": {Type: graphql.String, Description: "Only names starting with this prefix."},
			"after":  {Type: graphql.String, Description: "Resume after this name (the last name of the previous page)."},
			"limit": {
				Type:         graphql.Int,
				DefaultValue: defaultCoordLimit,
				Description:  what + " per answer, 1..10000.",
			},
			"consistency": consistencyArgConfig,
		}
	}
	serializable := func(p graphql.ResolveParams) bool {
		return consistencyArg(p) == catalogpb.Consistency_SERIALIZABLE
	}
	listLocks := func(p graphql.ResolveParams, kind catalogpb.LockKind) (any, error) {
		limit, err := limitArg(p, defaultCoordLimit, maxCoordLimit)
		if err != nil {
			return nil, err
		}
		prefix, _ := p.Args["prefix"].(string)
		after, _ := p.Args["after"].(string)
		resp, err := b.ListLocks(p.Context, &catalogpb.ListLocksRequest{
			Prefix: prefix, Kind: kind, Limit: int64(limit), ContinueAfter: after, Serializable: serializable(p),
		})
		if err != nil {
			return nil, backendError(err)
		}
		return resp.GetLocks(), nil
	}
	getLock := func(p graphql.ResolveParams, kind catalogpb.LockKind) (any, error) {
		name, _ := p.Args["name"].(string)
		resp, err := b.GetLock(p.Context, &catalogpb.GetLockRequest{Name: name, Serializable: serializable(p)})
		if err != nil {
			return nil, backendError(err)
		}
		st := resp.GetState()
		if st == nil || kind != catalogpb.LockKind_LOCK_KIND_UNSPECIFIED && st.GetKind() != kind {
			return nil, nil
		}
		return st, nil
	}

	locksArgs := listArgs("Locks")
	locksArgs["kind"] = &graphql.ArgumentConfig{Type: lockKind, Description: "Only names of this kind (every kind when omitted)."}
	return graphql.Fields{
		"locks": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(lockType))),
			Description: "Lock names (mutexes, RW locks, semaphores, elections) sorted by name. A page shorter than limit is the last.",
			Args:        locksArgs,
			Resolve: func(p graphql.ResolveParams) (any, error) {
				kind, _ := p.Args["kind"].(catalogpb.LockKind)
				return listLocks(p, kind)
			},
		},
		"lock": &graphql.Field{
			Type:        lockType,
			Description: "One lock name, or null when it has neither holders nor waiters.",
			Args: graphql.FieldConfigArgument{
				"name":        {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				return getLock(p, catalogpb.LockKind_LOCK_KIND_UNSPECIFIED)
			},
		},
		"elections": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(electionType))),
			Description: "Elections with a leader or candidates, sorted by name. A page shorter than limit is the last.",
			Args:        listArgs("Elections"),
			Resolve: func(p graphql.ResolveParams) (any, error) {
				return listLocks(p, catalogpb.LockKind_LOCK_KIND_ELECTION)
			},
		},
		"election": &graphql.Field{
			Type:        electionType,
			Description: "One election, or null when it has neither leader nor candidates (or the name is not an election).",
			Args: graphql.FieldConfigArgument{
				"name":        {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) { return getLock(p, catalogpb.LockKind_LOCK_KIND_ELECTION) },
		},
		"barriers": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(barrierType))),
			Description: "Barriers sorted by name. A page shorter than limit is the last.",
			Args:        listArgs("Barriers"),
			Resolve: func(p graphql.ResolveParams) (any, error) {
				limit, err := limitArg(p, defaultCoordLimit, maxCoordLimit)
				if err != nil {
					return nil, err
				}
				prefix, _ := p.Args["prefix"].(string)
				after, _ := p.Args["after"].(string)
				resp, err := b.ListBarriers(p.Context, &catalogpb.ListBarriersRequest{
					Prefix: prefix, Limit: int64(limit), ContinueAfter: after, Serializable: serializable(p),
				})
				if err != nil {
					return nil, backendError(err)
				}
				return resp.GetBarriers(), nil
			},
		},
		"queues": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(queueType))),
			Description: "Queues with items or waiting consumers, sorted by name. A page shorter than limit is the last.",
			Args:        listArgs("Queues"),
			Resolve: func(p graphql.ResolveParams) (any, error) {
				limit, err := limitArg(p, defaultCoordLimit, maxCoordLimit)
				if err != nil {
					return nil, err
				}
				prefix, _ := p.Args["prefix"].(string)
				after, _ := p.Args["after"].(string)
				resp, err := b.ListQueues(p.Context, &catalogpb.ListQueuesRequest{
					Prefix: prefix, Limit: int64(limit), ContinueAfter: after, Serializable: serializable(p),
				})
				if err != nil {
					return nil, backendError(err)
				}
				return resp.GetQueues(), nil
			},
		},
		"queue": &graphql.Field{
			Type:        queueType,
			Description: "One queue, empty when it holds nothing (null only when the read failed).",
			Args: graphql.FieldConfigArgument{
				"name":        {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				name, _ := p.Args["name"].(string)
				resp, err := b.QueueStatus(p.Context, &catalogpb.QueueStatusRequest{Queue: name, Serializable: serializable(p)})
				if err != nil {
					return nil, backendError(err)
				}
				st := resp.GetStatus()
				if st == nil {
					st = &catalogpb.QueueStatus{Queue: name}
				}
				return st, nil
			},
		},
	}
}

// leaderResolver resolves a field of an election's leader (its first
// holder), null while there is none.
func leaderResolver(get func(*catalogpb.LockOwner) any) graphql.FieldResolveFn {
	return func(p graphql.ResolveParams) (any, error) {
		st, err := sourceAs[*catalogpb.LockState](p)
		if err != nil || len(st.GetHolders()) == 0 {
			return nil, err
		}
		return get(st.GetHolders()[0]), nil
	}
}

// timeField renders unix nanoseconds as RFC 3339 in UTC, null when 0.
func timeField[S any](desc string, get func(S) int64) *graphql.Field {
	return &graphql.Field{
		Type:        graphql.String,
		Description: desc + " Null when unknown.",
		Resolve: func(p graphql.ResolveParams) (any, error) {
			src, err := sourceAs[S](p)
			if err != nil {
				return nil, err
			}
			ns := get(src)
			if ns == 0 {
				return nil, nil
			}
			return time.Unix(0, ns).UTC().Format(time.RFC3339Nano), nil
		},
	}
}
