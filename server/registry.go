package server

// STUB: replaced by the registry work.

import (
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

type registryService struct {
	catalogpb.UnimplementedRegistryServer
	s *Server
}

func applyRegistryCommand(tx *bbolt.Tx, rev int64, cmd *catalogpb.Command) (proto.Message, []*catalogpb.Event, error) {
	panic("registry commands are not built yet")
}
