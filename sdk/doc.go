// Package sdk is the Go client of catalogd.
//
// It owns the client side of the wire contract in api/catalogpb: one gRPC
// connection spread over every configured endpoint (round robin, so load is
// shared and a dead endpoint is skipped), retries where they are safe, and the
// mapping of gRPC errors back to exported sentinels such as ErrKeyTooLarge, so
// callers match failures with errors.Is and never by message text.
//
// The invariant it keeps: a request is sent again only when sending it again
// cannot apply it twice. Reads (Get, Status) are retried on codes.Unavailable;
// writes (Put, Delete, Txn) only when the server answered NO_LEADER, which
// guarantees the write was not proposed. Retries back off exponentially with
// jitter and never wait past the caller's context deadline.
//
// A Config with one endpoint gives a client pinned to that endpoint, which is
// how a benchmark spreads its connections over a cluster.
//
// The convenience API takes string keys and values, as etcd's clientv3 does;
// responses are the catalogpb messages, whose keys and values are []byte.
// KV and Cluster give the raw generated clients for anything else.
//
// This package must not import any server-side package of this module (only
// api/catalogpb, grpc, protobuf and genproto's errdetails): a test enforces it.
package sdk
