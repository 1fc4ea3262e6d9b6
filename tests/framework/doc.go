// Package framework runs catalogd clusters for tests: NewCluster starts n
// members, each with its own data dir and addresses chosen before start
// (every member's --initial-cluster needs every peer address), and
// t.Cleanup stops them.
//
// It owns the members' lifecycle (Stop, Kill, Restart, StopAll, RestartAll,
// Pause, Resume, WipeDataDir), membership changes (Join, RemoveMember),
// network faults between members (Cut, CutOneWay, Isolate, Heal), waiting
// for an agreed leader, and clients pinned to chosen members. Scenarios are
// written against *Cluster only, never against a server.Server, so the same
// scenarios run against both kinds of member:
//
//   - in-process (the default): server.Server values in the test's process;
//     faults are a drop table the peer transport consults (Drop hook).
//     Pause skips the test.
//   - processes (WithProcesses, or CATALOGD_TEST_PROCESSES=1 for every
//     cluster): the catalogd binary, built once per test binary from
//     ./cmd/catalogd (or CATALOGD_TEST_BIN), stopped with SIGTERM, killed
//     with SIGKILL, paused with SIGSTOP. As root with iproute2 and iptables,
//     each member runs in its own network namespace on 10.X.Y.n (X.Y random
//     per cluster), joined by a bridge in a hub namespace, and faults are
//     iptables DROP rules in the receiving member's namespace; the test
//     process reaches every member through 10.X.Y.1. Otherwise members
//     listen on loopback ports and partitions skip the test
//     (PartitionsSupported says which). CATALOGD_TEST_NETNS=off forces
//     loopback.
//
// Each member's log goes to <ArtifactDir>/<name>.log, kept with whatever a
// test writes into ArtifactDir when the test fails (under
// CATALOGD_TEST_ARTIFACTS if set) and removed otherwise.
//
// The invariant it keeps: a member's name, addresses and data dir never change
// across restarts, so a restarted member is the same raft member. A member
// that joins gets a new number, name, data dir and addresses.
//
// Methods of a Cluster fail the test given to NewCluster (t.Fatalf), so call
// them from that test's goroutine.
//
// It may import anything in the module; nothing outside tests/ imports it.
package framework
