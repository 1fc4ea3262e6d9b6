package server

// STUB: replaced by the health-check work.

import "github.com/catalogd/catalogd/api/catalogpb"

type healthChecker struct{ s *Server }

func newHealthChecker(s *Server) *healthChecker                       { return &healthChecker{s: s} }
func (c *healthChecker) Applied(rev int64, b []*catalogpb.EventBatch) {}
func (c *healthChecker) Restored(rev int64)                           {}
func (c *healthChecker) run(stop <-chan struct{})                     { <-stop }
