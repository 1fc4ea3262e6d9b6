package httpapi

import (
	"encoding/base64"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/graphql-go/graphql"
	"google.golang.org/grpc/codes"

	"github.com/catalogd/catalogd/api/catalogpb"
)

const (
	defaultServicesLimit = 100
	// maxServicesLimit is the server's cap on one ListServices page.
	maxServicesLimit = 10000
	// defaultInstancesLimit bounds Service.instances when no limit is given:
	// enough for nearly every service without risking a huge answer.
	defaultInstancesLimit = 1000
	// maxInstancesLimit is the server's cap on one GetService page.
	maxInstancesLimit = 10000
)

// A serviceNode is a Service as a GraphQL source: the service and the
// consistency of the read that found it, which its nested fields (instances,
// shardMap) read with as well.
type serviceNode struct {
	svc         *catalogpb.Service
	consistency catalogpb.Consistency
}

// A summaryNode is one entry of the services listing.
type summaryNode struct {
	sum         *catalogpb.ServiceSummary
	consistency catalogpb.Consistency
}

// registryFields is the discovery area: services with their instances and
// shard maps, read through the Registry RPCs of the Backend.
func registryFields(b Backend, shared *sharedTypes) graphql.Fields {
	instanceState := protoEnum("InstanceState", "The lifecycle state of an instance, as its owner set it.", catalogpb.InstanceState_name, map[catalogpb.InstanceState]string{
		catalogpb.InstanceState_STATE_UNSPECIFIED: "Not set; never stored by a current server.",
		catalogpb.InstanceState_STATE_STARTING:    "Registered, not taking traffic yet.",
		catalogpb.InstanceState_STATE_SERVING:     "Taking traffic.",
		catalogpb.InstanceState_STATE_DRAINING:    "Finishing its work before it stops; send it nothing new.",
		catalogpb.InstanceState_STATE_STOPPED:     "Stopped, still registered.",
	})
	healthStatus := protoEnum("HealthStatus", "The health of an instance, from its checks or its owner.", catalogpb.HealthStatus_name, map[catalogpb.HealthStatus]string{
		catalogpb.HealthStatus_HEALTH_UNSPECIFIED: "Not set; never stored by a current server.",
		catalogpb.HealthStatus_PASSING:            "Healthy.",
		catalogpb.HealthStatus_WARNING:            "Serving, with a problem worth a look.",
		catalogpb.HealthStatus_CRITICAL:           "Failing; do not send it traffic.",
	})

	metadataEntryType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "MetadataEntry",
		Description: "One key-value pair of a metadata map.",
		Fields: graphql.Fields{
			"key":   stringField("The key.", func(e metadataEntry) string { return e.key }),
			"value": stringField("The value.", func(e metadataEntry) string { return e.value }),
		},
	})
	type port = struct {
		name string
		port int32
	}
	portType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "NamedPort",
		Description: "An extra port of an instance, by name.",
		Fields: graphql.Fields{
			"name": stringField("The port's name, e.g. http.", func(p port) string { return p.name }),
			"port": scalarField(graphql.Int, "The port number.", func(p port) any { return int(p.port) }),
		},
	})

	type check = *catalogpb.HealthCheck
	checkType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "HealthCheck",
		Description: "The probe the servers run against an instance. Exactly one of http, tcp and grpc is set.",
		Fields: graphql.Fields{
			"http":                   stringField("A URL probed with GET; a 2xx answer passes.", check.GetHttp),
			"tcp":                    stringField("A host:port that must accept a connection.", check.GetTcp),
			"grpc":                   stringField("A host:port serving the gRPC health protocol.", check.GetGrpc),
			"grpcService":            stringField("The service name asked of the gRPC health protocol (empty: the whole server).", check.GetGrpcService),
			"intervalMs":             int32Field("Milliseconds between probes.", check.GetIntervalMs),
			"timeoutMs":              int32Field("Milliseconds one probe may take.", check.GetTimeoutMs),
			"failuresBeforeCritical": int32Field("Consecutive failures that make the instance critical.", func(c check) int64 { return int64(c.GetFailuresBeforeCritical()) }),
			"successesBeforePassing": int32Field("Consecutive successes that make the instance passing.", func(c check) int64 { return int64(c.GetSuccessesBeforePassing()) }),
		},
	})

	type inst = *catalogpb.Instance
	instanceType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Instance",
		Description: "One registered instance of a service.",
		Fields: graphql.Fields{
			"service": stringField("The service the instance belongs to.", inst.GetService),
			"id":      stringField("The id, unique within the service.", inst.GetId),
			"address": stringField("The address, host:port.", inst.GetAddress),
			"ports": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(portType))),
				Description: "Named extra ports, sorted by name.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					i, err := sourceAs[inst](p)
					if err != nil {
						return nil, err
					}
					out := make([]port, 0, len(i.GetPorts()))
					for _, name := range slices.Sorted(maps.Keys(i.GetPorts())) {
						out = append(out, port{name, i.GetPorts()[name]})
					}
					return out, nil
				},
			},
			"tags":         stringListField("The instance's tags.", inst.GetTags),
			"metadata":     metadataField(metadataEntryType, "The instance's metadata.", inst.GetMetadata),
			"zone":         stringField("The zone the instance runs in (empty when not given).", inst.GetZone),
			"dc":           stringField("The data center of the server that registered it.", inst.GetDc),
			"weight":       scalarField(graphql.Int, "The load-balancing weight, 1..1000.", func(i inst) any { return int(i.GetWeight()) }),
			"state":        scalarField(instanceState, "The lifecycle state.", func(i inst) any { return i.GetState() }),
			"health":       scalarField(healthStatus, "The health.", func(i inst) any { return i.GetHealth() }),
			"healthOutput": stringField("The text of the last health change (a check's output or what SetHealth was given).", inst.GetHealthOutput),
			"healthChangedAt": &graphql.Field{
				Type:        graphql.String,
				Description: "When the health last changed, RFC 3339 in UTC; null when it never did.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					i, err := sourceAs[inst](p)
					if err != nil {
						return nil, err
					}
					if i.GetHealthChangedUnixNano() == 0 {
						return nil, nil
					}
					return time.Unix(0, i.GetHealthChangedUnixNano()).UTC().Format(time.RFC3339Nano), nil
				},
			},
			"lease":          int64Field(`The lease the instance lives by, "0" for none.`, inst.GetLease),
			"createRevision": int64Field("The revision that registered the instance.", inst.GetCreateRevision),
			"modRevision":    int64Field("The revision that last changed it.", inst.GetModRevision),
			"check": &graphql.Field{
				Type:        checkType,
				Description: "The health check the servers run, null when none.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					i, err := sourceAs[inst](p)
					if err != nil || i.GetCheck() == nil {
						return nil, err
					}
					return i.GetCheck(), nil
				},
			},
		},
	})

	type slotRange = *catalogpb.SlotRange
	slotRangeType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "SlotRange",
		Description: "Hash slots from..to, both included.",
		Fields: graphql.Fields{
			"from": scalarField(graphql.Int, "The first slot.", func(r slotRange) any { return int(r.GetFrom()) }),
			"to":   scalarField(graphql.Int, "The last slot.", func(r slotRange) any { return int(r.GetTo()) }),
		},
	})
	type shard = *catalogpb.Shard
	shardType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Shard",
		Description: "One shard: a key range [startKey, endKey) or hash slots, and its replicas.",
		Fields: graphql.Fields{
			"id": stringField("The shard id, unique in the map.", shard.GetId),
			"startKey": stringField("The first key of the range as text; read startKeyBase64 for keys that are not UTF-8.",
				func(s shard) string { return string(s.GetStartKey()) }),
			"startKeyBase64": stringField("The first key, standard base64.",
				func(s shard) string { return base64.StdEncoding.EncodeToString(s.GetStartKey()) }),
			"endKey": stringField("The end of the range (excluded) as text; empty is the end of the key space.",
				func(s shard) string { return string(s.GetEndKey()) }),
			"endKeyBase64": stringField("The end of the range, standard base64.",
				func(s shard) string { return base64.StdEncoding.EncodeToString(s.GetEndKey()) }),
			"slots": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(slotRangeType))),
				Description: "The hash slots the shard holds (empty for a key-range shard).",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					s, err := sourceAs[shard](p)
					if err != nil {
						return nil, err
					}
					return s.GetSlots(), nil
				},
			},
			"replicas": stringListField("Instance ids holding the shard, primary first.", shard.GetReplicas),
		},
	})
	type shardMap = *catalogpb.ShardMap
	shardMapType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "ShardMap",
		Description: "How a service's data is split among its instances.",
		Fields: graphql.Fields{
			"service":     stringField("The service.", shardMap.GetService),
			"epoch":       int64Field("The map's version: 1 after the first set, one more for each set after.", shardMap.GetEpoch),
			"totalSlots":  scalarField(graphql.Int, "The size of the slot space when shards use slots, else 0.", func(m shardMap) any { return int(m.GetTotalSlots()) }),
			"modRevision": int64Field("The revision that last set the map.", shardMap.GetModRevision),
			"shards": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(shardType))),
				Description: "The shards.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					m, err := sourceAs[shardMap](p)
					if err != nil {
						return nil, err
					}
					return m.GetShards(), nil
				},
			},
		},
	})

	getShardMap := func(p graphql.ResolveParams, service string, consistency catalogpb.Consistency) (any, error) {
		resp, err := b.GetShardMap(p.Context, &catalogpb.GetShardMapRequest{Service: service, Consistency: consistency})
		if err != nil {
			return nil, nullIfNotFound(err)
		}
		if resp.GetMap().GetEpoch() == 0 {
			return nil, nil
		}
		return resp.GetMap(), nil
	}

	instanceArgs := graphql.FieldConfigArgument{
		"healthy": {
			Type:        graphql.Boolean,
			Description: "Only instances that are PASSING or WARNING and STATE_SERVING.",
		},
		"tag": {
			Type:        graphql.String,
			Description: "Only instances carrying this tag.",
		},
		"zone": {
			Type:        graphql.String,
			Description: "Only instances in this zone.",
		},
		"state": {
			Type:        graphql.NewList(graphql.NewNonNull(instanceState)),
			Description: "Only instances in one of these states.",
		},
		"health": {
			Type:        graphql.NewList(graphql.NewNonNull(healthStatus)),
			Description: "Only instances with one of these health values.",
		},
		"after": {
			Type:        graphql.String,
			Description: "Resume after this instance id (the last id of the previous page).",
		},
		"limit": {
			Type:         graphql.Int,
			DefaultValue: defaultInstancesLimit,
			Description:  "Instances per answer, 1..10000. Instances come sorted by id: a page shorter than limit is the last.",
		},
	}

	type svc = serviceNode
	serviceType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Service",
		Description: "A named service: what it is, its instances and its shard map.",
		Fields: graphql.Fields{
			"name":           stringField("The service name.", func(s svc) string { return s.svc.GetName() }),
			"description":    stringField("What the service does.", func(s svc) string { return s.svc.GetDescription() }),
			"tags":           stringListField("The service's tags.", func(s svc) []string { return s.svc.GetTags() }),
			"metadata":       metadataField(metadataEntryType, "The service's metadata.", func(s svc) map[string]string { return s.svc.GetMetadata() }),
			"owner":          stringField("Who owns the service.", func(s svc) string { return s.svc.GetOwner() }),
			"createRevision": int64Field("The revision that created the service.", func(s svc) int64 { return s.svc.GetCreateRevision() }),
			"modRevision":    int64Field("The revision that last changed the service.", func(s svc) int64 { return s.svc.GetModRevision() }),
			"instances": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(instanceType))),
				Description: "The instances matching every given filter, sorted by id.",
				Args:        instanceArgs,
				Resolve: func(p graphql.ResolveParams) (any, error) {
					s, err := sourceAs[svc](p)
					if err != nil {
						return nil, err
					}
					req, err := instancesRequest(p, s)
					if err != nil {
						return nil, err
					}
					resp, err := b.GetService(p.Context, req)
					if err != nil {
						return nil, backendError(err)
					}
					return resp.GetInstances(), nil
				},
			},
			"shardMap": &graphql.Field{
				Type:        shardMapType,
				Description: "The service's shard map, null when it has none.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					s, err := sourceAs[svc](p)
					if err != nil {
						return nil, err
					}
					return getShardMap(p, s.svc.GetName(), s.consistency)
				},
			},
		},
	})

	type sum = summaryNode
	countField := func(desc string, get func(*catalogpb.ServiceSummary) int64) *graphql.Field {
		return int32Field(desc, func(s sum) int64 { return get(s.sum) })
	}
	summaryType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "ServiceSummary",
		Description: "A service with the counts of its instances.",
		Fields: graphql.Fields{
			"service": &graphql.Field{
				Type:        graphql.NewNonNull(serviceType),
				Description: "The service.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					s, err := sourceAs[sum](p)
					if err != nil {
						return nil, err
					}
					return serviceNode{svc: s.sum.GetService(), consistency: s.consistency}, nil
				},
			},
			"instanceCount": countField("Its instances.", (*catalogpb.ServiceSummary).GetInstances),
			"passing":       countField("Its PASSING instances.", (*catalogpb.ServiceSummary).GetPassing),
			"warning":       countField("Its WARNING instances.", (*catalogpb.ServiceSummary).GetWarning),
			"critical":      countField("Its CRITICAL instances.", (*catalogpb.ServiceSummary).GetCritical),
			"serving":       countField("Its instances in STATE_SERVING.", (*catalogpb.ServiceSummary).GetServing),
		},
	})

	consistencyArgConfig := &graphql.ArgumentConfig{
		Type:        shared.consistency,
		Description: "How the read is served; LINEARIZABLE when omitted. Nested fields read the same way.",
	}

	return graphql.Fields{
		"services": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(summaryType))),
			Description: "Services sorted by name, with instance counts. A page shorter than limit is the last; the next starts after the last name.",
			Args: graphql.FieldConfigArgument{
				"tag": {Type: graphql.String, Description: "Only services carrying this tag."},
				"after": {
					Type:        graphql.String,
					Description: "Resume after this service name (the last name of the previous page).",
				},
				"limit": {
					Type:         graphql.Int,
					DefaultValue: defaultServicesLimit,
					Description:  "Services per answer, 1..10000.",
				},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				limit, err := limitArg(p, defaultServicesLimit, maxServicesLimit)
				if err != nil {
					return nil, err
				}
				tag, _ := p.Args["tag"].(string)
				after, _ := p.Args["after"].(string)
				resp, err := b.ListServices(p.Context, &catalogpb.ListServicesRequest{
					Consistency: consistencyArg(p),
					Limit:       int64(limit),
					After:       after,
					Tag:         tag,
				})
				if err != nil {
					return nil, backendError(err)
				}
				out := make([]summaryNode, 0, len(resp.GetServices()))
				for _, s := range resp.GetServices() {
					out = append(out, summaryNode{sum: s, consistency: consistencyArg(p)})
				}
				return out, nil
			},
		},
		"service": &graphql.Field{
			Type:        serviceType,
			Description: "One service, or null when it does not exist.",
			Args: graphql.FieldConfigArgument{
				"name":        {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				name, _ := p.Args["name"].(string)
				// Instances are read by the instances field, with its filters.
				resp, err := b.GetService(p.Context, &catalogpb.GetServiceRequest{Name: name, Consistency: consistencyArg(p), Limit: 1})
				if err != nil {
					return nil, nullIfNotFound(err)
				}
				return serviceNode{svc: resp.GetService(), consistency: consistencyArg(p)}, nil
			},
		},
		"instance": &graphql.Field{
			Type:        instanceType,
			Description: "One instance, or null when it (or its service) does not exist.",
			Args: graphql.FieldConfigArgument{
				"service":     {Type: graphql.NewNonNull(graphql.String)},
				"id":          {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				service, _ := p.Args["service"].(string)
				id, _ := p.Args["id"].(string)
				resp, err := b.GetInstance(p.Context, &catalogpb.GetInstanceRequest{Service: service, Id: id, Consistency: consistencyArg(p)})
				if err != nil {
					return nil, nullIfNotFound(err)
				}
				return resp.GetInstance(), nil
			},
		},
		"shardMap": &graphql.Field{
			Type:        shardMapType,
			Description: "A service's shard map, or null when the service does not exist or has none.",
			Args: graphql.FieldConfigArgument{
				"service":     {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				service, _ := p.Args["service"].(string)
				return getShardMap(p, service, consistencyArg(p))
			},
		},
	}
}

// instancesRequest checks the arguments of Service.instances and builds the
// GetService request that answers it.
func instancesRequest(p graphql.ResolveParams, s serviceNode) (*catalogpb.GetServiceRequest, error) {
	limit, err := limitArg(p, defaultInstancesLimit, maxInstancesLimit)
	if err != nil {
		return nil, err
	}
	f := &catalogpb.InstanceFilter{}
	f.Healthy, _ = p.Args["healthy"].(bool)
	if tag, _ := p.Args["tag"].(string); tag != "" {
		f.Tags = []string{tag}
	}
	f.Zone, _ = p.Args["zone"].(string)
	states, _ := p.Args["state"].([]any)
	for _, v := range states {
		if st, ok := v.(catalogpb.InstanceState); ok {
			f.State = append(f.State, st)
		}
	}
	healths, _ := p.Args["health"].([]any)
	for _, v := range healths {
		if h, ok := v.(catalogpb.HealthStatus); ok {
			f.Health = append(f.Health, h)
		}
	}
	after, _ := p.Args["after"].(string)
	return &catalogpb.GetServiceRequest{
		Name:        s.svc.GetName(),
		Filter:      f,
		Consistency: s.consistency,
		Limit:       int64(limit),
		After:       after,
	}, nil
}

// limitArg reads the limit argument: def when absent or null, else 1..max.
func limitArg(p graphql.ResolveParams, def, max int) (int, error) {
	limit, ok := p.Args["limit"].(int)
	if !ok {
		limit = def
	}
	if limit < 1 || limit > max {
		return 0, invalidArgument(catalogpb.ErrorReason_INVALID_LIMIT, "limit must be 1..%d, got %d", max, limit)
	}
	return limit, nil
}

// nullIfNotFound makes a NotFound answer a null field (the GraphQL way to say
// "no such thing", as kv does for a missing key); other errors stay errors.
func nullIfNotFound(err error) error {
	fe := backendError(err)
	if f, ok := fe.(*fieldError); ok && f.code == codes.NotFound {
		return nil
	}
	return fe
}

// A metadataEntry is one pair of a metadata map as a GraphQL source.
type metadataEntry struct{ key, value string }

// metadataField renders a map as a list of key-value pairs sorted by key
// (GraphQL has no map type).
func metadataField[S any](entryType *graphql.Object, desc string, get func(S) map[string]string) *graphql.Field {
	return &graphql.Field{
		Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(entryType))),
		Description: desc + " Sorted by key.",
		Resolve: func(p graphql.ResolveParams) (any, error) {
			src, err := sourceAs[S](p)
			if err != nil {
				return nil, err
			}
			m := get(src)
			out := make([]metadataEntry, 0, len(m))
			for _, k := range slices.Sorted(maps.Keys(m)) {
				out = append(out, metadataEntry{k, m[k]})
			}
			return out, nil
		},
	}
}

func stringListField[S any](desc string, get func(S) []string) *graphql.Field {
	return &graphql.Field{
		Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(graphql.String))),
		Description: desc,
		Resolve: func(p graphql.ResolveParams) (any, error) {
			src, err := sourceAs[S](p)
			if err != nil {
				return nil, err
			}
			out := get(src)
			if out == nil {
				out = []string{}
			}
			return out, nil
		},
	}
}

// int32Field renders an int64 that is small in practice (a count, a TTL in
// seconds) as a GraphQL Int, and fails the field if it does not fit.
func int32Field[S any](desc string, get func(S) int64) *graphql.Field {
	return &graphql.Field{
		Type:        graphql.NewNonNull(graphql.Int),
		Description: desc,
		Resolve: func(p graphql.ResolveParams) (any, error) {
			src, err := sourceAs[S](p)
			if err != nil {
				return nil, err
			}
			v := get(src)
			if v > math.MaxInt32 || v < math.MinInt32 {
				return nil, &fieldError{
					msg:  p.Info.ParentType.Name() + "." + p.Info.FieldName + " is " + strconv.FormatInt(v, 10) + ", past GraphQL's 32-bit Int",
					code: codes.OutOfRange,
				}
			}
			return int(v), nil
		},
	}
}
