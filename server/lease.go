package server

// STUB: replaced by the lease work.

import (
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

type leaseManager struct{ s *Server }

func newLeaseManager(s *Server) *leaseManager                        { return &leaseManager{s: s} }
func (l *leaseManager) Applied(rev int64, b []*catalogpb.EventBatch) {}
func (l *leaseManager) Restored(rev int64)                           {}
func (l *leaseManager) run(stop <-chan struct{})                     { <-stop }

type leaseService struct {
	catalogpb.UnimplementedLeaseServer
	s *Server
}

func applyLeaseCommand(tx *bbolt.Tx, rev int64, cmd *catalogpb.Command) (proto.Message, []*catalogpb.Event, error) {
	panic("lease commands are not built yet")
}
