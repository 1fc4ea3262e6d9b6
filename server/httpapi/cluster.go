package httpapi

import (
	"github.com/graphql-go/graphql"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// clusterFields is the cluster area: the answering server's view of its raft
// group, from one Backend.Status call per request.
func clusterFields(b Backend, shared *sharedTypes) graphql.Fields {
	type status = *catalogpb.StatusResponse
	clusterStatus := graphql.NewObject(graphql.ObjectConfig{
		Name:        "ClusterStatus",
		Description: "The raft group as the answering server sees it.",
		Fields: graphql.Fields{
			"name":            stringField("The answering server's member name.", status.GetName),
			"dc":              stringField("The data center of the group.", status.GetDc),
			"version":         stringField("The catalogd version of the answering server.", status.GetVersion),
			"leader":          uint64Field(`The leader's member id, "0" when no leader is known.`, status.GetLeader),
			"term":            uint64Field("The raft term.", status.GetTerm),
			"commitIndex":     uint64Field("The last raft index the server knows committed.", status.GetCommitIndex),
			"appliedIndex":    uint64Field("The last raft index the server applied.", status.GetAppliedIndex),
			"revision":        int64Field("The store revision the server applied.", status.GetRevision),
			"dbSize":          int64Field("The size of the server's database file, in bytes.", status.GetDbSize),
			"compactRevision": int64Field("The oldest revision the event history still holds.", status.GetCompactRevision),
			"header": &graphql.Field{
				Type:        shared.header,
				Description: "Where and when this status was served.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					s, err := sourceAs[status](p)
					if err != nil {
						return nil, err
					}
					return s.GetHeader(), nil
				},
			},
		},
	})

	type member = *catalogpb.Member
	memberType := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Member",
		Description: "One server of the raft group.",
		Fields: graphql.Fields{
			"id":         uint64Field("The member id.", member.GetId),
			"name":       stringField("The member name.", member.GetName),
			"peerAddr":   stringField("The raft peer address, host:port.", member.GetPeerAddr),
			"clientAddr": stringField("The gRPC client address, host:port.", member.GetClientAddr),
			"isLeader":   boolField("Whether the member leads the group.", member.GetIsLeader),
			"isLearner":  boolField("Whether the member is a non-voting learner.", member.GetIsLearner),
			"healthy": boolField("For the leader's view, the member acknowledged a heartbeat recently; "+
				"elsewhere, the peer stream to it is up.", member.GetHealthy),
			"matchIndex": uint64Field("The raft index the leader knows the member holds (leader's view only).", member.GetMatchIndex),
		},
	})

	return graphql.Fields{
		"cluster": &graphql.Field{
			Type:        graphql.NewNonNull(clusterStatus),
			Description: "The raft group as the answering server sees it.",
			Resolve: func(p graphql.ResolveParams) (any, error) {
				s, err := loadStatus(p.Context, b)
				if err != nil {
					return nil, backendError(err)
				}
				return s, nil
			},
		},
		"members": &graphql.Field{
			Type:        graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(memberType))),
			Description: "The servers of the raft group.",
			Resolve: func(p graphql.ResolveParams) (any, error) {
				s, err := loadStatus(p.Context, b)
				if err != nil {
					return nil, backendError(err)
				}
				return s.GetMembers(), nil
			},
		},
	}
}
