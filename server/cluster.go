package server

import (
	"context"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// clusterService implements catalogpb.ClusterServer.
type clusterService struct {
	catalogpb.UnimplementedClusterServer
	s *Server
}

func (c *clusterService) Status(ctx context.Context, _ *catalogpb.StatusRequest) (*catalogpb.StatusResponse, error) {
	resp, err := c.s.status(ctx)
	return resp, toGRPCError(err)
}

// status reports this member's view of the cluster.
func (s *Server) status(context.Context) (*catalogpb.StatusResponse, error) {
	st := s.node.Status()
	members, err := s.sm.members()
	if err != nil {
		return nil, err
	}
	rev := s.sm.Revision()
	resp := &catalogpb.StatusResponse{
		Header:          s.header(rev),
		Name:            s.cfg.Name,
		Dc:              s.cfg.DC,
		Version:         Version,
		Leader:          st.Lead,
		Term:            st.Term,
		CommitIndex:     st.Commit,
		AppliedIndex:    st.Applied,
		Revision:        rev,
		DbSize:          s.sm.dbSize(),
		CompactRevision: s.sm.CompactRevision(),
	}
	s.metrics.DBSize.Set(float64(resp.DbSize))
	for _, m := range members {
		pm := &catalogpb.Member{
			Id:         m.ID,
			Name:       m.Name,
			PeerAddr:   m.PeerAddr,
			ClientAddr: m.ClientAddr,
			IsLeader:   m.ID == st.Lead,
			IsLearner:  m.IsLearner,
		}
		if m.ID == s.id {
			pm.Healthy = true
		} else {
			pm.Healthy = st.Active[m.ID]
		}
		if pr, ok := st.Progress[m.ID]; ok {
			pm.MatchIndex = pr.Match
			// The leader knows who answered recently; its view wins.
			pm.Healthy = m.ID == s.id || pr.RecentActive
			pm.IsLearner = pr.IsLearner
		}
		resp.Members = append(resp.Members, pm)
	}
	return resp, nil
}

// httpBackend gives the HTTP surface what it needs from the server.
type httpBackend struct{ s *Server }

func (b httpBackend) Status(ctx context.Context) (*catalogpb.StatusResponse, error) {
	return b.s.status(ctx)
}

func (b httpBackend) Get(ctx context.Context, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	return b.s.get(ctx, req)
}

func (b httpBackend) Ready() (bool, string) { return b.s.Ready() }
