package httpapi

import (
	"strconv"

	"github.com/graphql-go/graphql"

	"github.com/catalogd/catalogd/api/catalogpb"
)

const (
	defaultLeasesLimit = 100
	// maxLeasesLimit is the server's cap on one Lease.List page.
	maxLeasesLimit = 10000
)

// leaseFields is the lease area: the leases the leader holds, through
// Backend.LeaseList.
func leaseFields(b Backend, shared *sharedTypes) graphql.Fields {
	type lease = *catalogpb.LeaseStatus
	leaseType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Lease",
		Description: "A lease: what lives by it disappears when it expires or is revoked.",
		Fields: graphql.Fields{
			"id":  int64Field("The lease id.", lease.GetId),
			"ttl": int32Field("The TTL in seconds, as granted.", lease.GetTtlSeconds),
			"remainingMs": int64Field("Milliseconds left before the lease expires, as the leader sees it "+
				"(a keep-alive renews it to the TTL).", lease.GetRemainingMs),
			"items":         int32Field("How many items (keys, instances, ...) are attached to the lease.", lease.GetItems),
			"grantRevision": int64Field("The revision that granted the lease.", lease.GetGrantRevision),
		},
	})
	return graphql.Fields{
		"leases": &graphql.Field{
			Type: graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(leaseType))),
			Description: "Leases sorted by id. A page shorter than limit is the last; the next starts after " +
				"the last id. Always read from the leader, which holds the deadlines.",
			Args: graphql.FieldConfigArgument{
				"after": {
					Type:        graphql.String,
					Description: "Resume after this lease id, in decimal (the last id of the previous page).",
				},
				"limit": {
					Type:         graphql.Int,
					DefaultValue: defaultLeasesLimit,
					Description:  "Leases per answer, 1..10000.",
				},
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				limit, err := limitArg(p, defaultLeasesLimit, maxLeasesLimit)
				if err != nil {
					return nil, err
				}
				var after int64
				if s, _ := p.Args["after"].(string); s != "" {
					if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
						return nil, invalidArgument(catalogpb.ErrorReason_INVALID_ARGUMENT,
							"after must be a lease id in decimal (0..9223372036854775807), got %q", s)
					}
				}
				resp, err := b.LeaseList(p.Context, &catalogpb.LeaseListRequest{After: after, Limit: int64(limit)})
				if err != nil {
					return nil, backendError(err)
				}
				return resp.GetLeases(), nil
			},
		},
	}
}
