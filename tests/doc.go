// Package tests holds catalogd's end-to-end scenarios: each starts a cluster
// with tests/framework, drives it through the Go client (sdk) and injected
// faults, and checks what a user of the cluster would see.
//
// The scenarios use only framework.Cluster and sdk, never a server.Server, so
// they run unchanged against any launcher the framework offers.
//
// It may import anything in the module; nothing imports it.
package tests
