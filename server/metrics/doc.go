// Package metrics defines the Prometheus collectors of one catalogd server and
// the gRPC interceptors that count and time its RPCs.
//
// It owns the metric names: every series a server exports is declared here,
// so dashboards and alerts have one place to look, and a rename is one change.
//
// Invariant: a Metrics registers its collectors on its own Registry, never on
// prometheus.DefaultRegisterer, because tests run several servers in one
// process and a second global registration would panic.
//
// It must not import other catalogd packages: consensus, the state machine and
// the HTTP surface all import it, and it stays a leaf so they can.
package metrics
