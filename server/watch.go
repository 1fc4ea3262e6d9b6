package server

// STUB: replaced by the watch work.

import "github.com/catalogd/catalogd/api/catalogpb"

type watchHub struct{ s *Server }

func newWatchHub(s *Server) *watchHub                            { return &watchHub{s: s} }
func (h *watchHub) Applied(rev int64, b []*catalogpb.EventBatch) {}
func (h *watchHub) Restored(rev int64)                           {}
func (h *watchHub) run(stop <-chan struct{})                     { <-stop }

type watchService struct {
	catalogpb.UnimplementedWatchServer
	s *Server
}
