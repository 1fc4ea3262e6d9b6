// Package robustness injects faults into clusters of real catalogd processes
// under load and checks, after each run, that the cluster kept its
// promises. It runs through tests/framework (WithProcesses).
//
// # A run
//
// TestRobustness makes randomized runs. Each run starts a fresh 3-member
// cluster (100ms tick, 10 election ticks, a snapshot every 2000 entries
// keeping 500, so a member that joins or comes back empty gets a streamed
// snapshot), and 8 clients, each its own sdk.Client over every member, that
// put, read linearizably, compare-and-swap (a Txn comparing the value, or the
// key's absence, then putting) and delete on 8 keys. Every written value is
// unique (client and sequence number), so a value read names the write that
// stored it. Each operation has a 2s timeout; the clients wait for a
// connection rather than fail at once while no member is up.
//
// The load runs for a while, then one fault, drawn by the run's seed, is
// injected, held, and undone, and the load runs on:
//
//	kill-leader, kill-follower   SIGKILL, restart with the data kept
//	kill-all                     SIGKILL of every member, then restart all
//	pause-leader, pause-follower SIGSTOP, later SIGCONT
//	isolate-follower             a minority cut from the others
//	isolate-leader               the leader cut from the others
//	bridge                       two members cut from each other, the third reaching both
//	one-way-cut                  one member's packets to another dropped
//	restart-follower             SIGTERM, restart with the data kept
//	wipe-follower                stop, wipe the data dir, MemberRemove, join a fresh member
//	replace-follower             MemberRemove of a running follower, join a fresh member
//
// The partition faults need Cluster.PartitionsSupported (network namespaces:
// root, iproute2, iptables); without it a drawn partition fault is replaced
// by another and the log says why.
//
// # What is checked
//
// After the load stops, the network is healed and every member still in the
// cluster runs again, the suite waits until every member reports the same
// applied index (Cluster.Hash), then:
//
//   - every member's Cluster.Hash has the same revision and hash, and no
//     member reports a problem in its events history (events_problem);
//   - every key is read linearizably at the end, and the final value and mod
//     revision agree with the acknowledged writes: nothing acknowledged is
//     lost, and no two acknowledged writes produced the same revision;
//   - the whole history, final reads included, is linearizable: porcupine
//     (github.com/anishathalye/porcupine) checks it against a model of a
//     key-value map partitioned per key, within 60s; running out of time is
//     reported as a failure ("NOT CHECKED"), never as a pass;
//   - no member process exited unasked, and the load saw no error that the
//     faults do not explain (anything but unavailable, no leader, timeout,
//     stopped); an answer whose header names another cluster id counts as
//     such an error (on loopback ports, another test's member can take the
//     port of a stopped one).
//
// The model also checks revisions: a write's revision is above every
// revision observed before it, and a read's revision is at least every one
// observed before it, so a stale read is caught even when the value happens
// to be right. A write whose outcome is unknown (timeout, connection lost)
// may take effect at any point after its call or never (its return time is
// the end of the history, as in etcd's robustness tests; when a later read
// saw its value, that read's return). A write refused with NO_LEADER is held
// to not having happened. Failed reads tell nothing and are dropped.
//
// # Coordination workloads
//
// Alongside the key-value load, under the same fault, run (unless
// -coordination=false) clients of the coordination services, each with its
// own sdk.Session whose lease has a 2s TTL, so that faults expire leases:
//
//   - 3 lockers take the mutex robustness/lock (sdk.Mutex), read the grant's
//     revision from the lock's record, write the register robustness/fenced
//     in a Txn guarded by Compare(Fence(lock, token), "=", true), read it and
//     unlock. 5% of the holds revoke their own lease first (a zombie), and
//     once per run a holder stops renewing its lease and waits until it
//     expired (a paused holder); their writes must be refused.
//   - 3 campaigners campaign in robustness/election, proclaim 1-3 values
//     while they lead, and end the term by Resign (75%), a revoke of their
//     lease (20%) or letting it expire; one more client observes the
//     election.
//   - 2 producers enqueue unique payloads to robustness/queue; 3 consumers
//     dequeue and acknowledge, but drop 9% of their items before the Ack
//     (revoking their lease, or letting it expire), so items go back to the
//     head of the queue. After the run the queue is drained: every item left
//     is taken and acknowledged, until none is ready or in flight.
//
// The fenced register's operations join the key-value history (porcupine
// checks it with the other keys: a fenced put writes when its fence held
// and changes nothing otherwise). What the answers prove about fencing
// tokens (granted at a revision, held at a revision: a fenced write
// accepted, a Proclaim, an Unlock or Resign, a leadership observed;
// released from a revision: Unlock, Resign, a revoke of the lease) is
// checked for the mutex and for the election alike (checkHolds): a token
// belongs to one lease and is granted once; tokens strictly increase in
// grant order, by revision and by real time; at most one token is held at
// any revision and, in revision order, the tokens held never decrease (so
// no two leaders at once, and no write with a stale token accepted); no
// token is held after its release or after the grant of a newer one. The
// queue's operations (checkQueue) must show no item handed out that was
// not enqueued or under another id, no item acknowledged twice, no item
// handed to two consumers at once or acknowledged by a consumer it had been
// taken from, and no item lost: every acknowledged enqueue's item is
// acknowledged by a successful Ack (or one of unknown outcome). Errors the
// faults do not explain fail the run as for the key-value load.
//
// On a failure the cluster's artifact dir (Cluster.ArtifactDir, logged) is
// kept with the members' logs, porcupine's visualisation
// linearizability-<seed>.html (when the history is not linearizable) and the
// history history-<seed>.json, which TestRecheckHistory checks again (and
// coordination-<seed>.json, the coordination workloads' records):
//
//	go test ./tests/robustness -run TestRecheckHistory -history <file>
//
// # Running it
//
// Quick mode (the default) is 10 runs with about 7-11s of load each:
//
//	go test ./tests/robustness -run TestRobustness -v
//
// Every run is a subtest named <fault>-seed<N> and logs the command that
// replays it (the same fault, victims and timings; the processes' own timing
// differs):
//
//	go test ./tests/robustness -run TestRobustness -seed N
//
// Flags: -runs N, -fault a,b (draw only among these faults),
// -coordination=false (the key-value load alone), -long. The soak
// is 100 runs with longer load and longer faults; give it time:
//
//	CATALOGD_ROBUSTNESS_LONG=1 go test ./tests/robustness -run TestRobustness -timeout 4h
//
// BenchmarkLeaderKill measures failover under write load (see its doc):
//
//	go test ./tests/robustness -run XXX -bench LeaderKill -benchtime 5x
//
// The package is tests only; nothing imports it.
package robustness
