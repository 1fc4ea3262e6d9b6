// Package framework runs catalogd clusters for tests: NewCluster starts n
// members on loopback, each with its own data dir and ports chosen before
// start (every member's --initial-cluster needs every peer address), and
// t.Cleanup stops them.
//
// It owns the members' lifecycle (Stop, Kill, Restart, StopAll, RestartAll),
// network faults between members (Cut, Isolate, Heal), waiting for an agreed
// leader, and clients pinned to chosen members. Scenarios are written against
// *Cluster only, never against a server.Server, so the same scenarios can run
// against real processes: the members are started by a launcher, and today's
// launcher runs them in this process (server.New). A launcher that execs the
// catalogd binary with the flags of a memberSpec would slot in beside it; it
// would enforce the fault table with a proxy in front of each peer address
// instead of the in-process Drop hook.
//
// The invariant it keeps: a member's name, addresses and data dir never change
// across restarts, so a restarted member is the same raft member.
//
// Methods of a Cluster fail the test given to NewCluster (t.Fatalf), so call
// them from that test's goroutine.
//
// It may import anything in the module; nothing outside tests/ imports it.
package framework
