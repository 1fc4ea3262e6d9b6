// Package httpapi is the HTTP surface of one catalogd server: liveness and
// readiness probes, the Prometheus scrape endpoint and the GraphQL API.
//
// Routes (all on one handler, returned by New):
//
//	GET  /healthz   200 "ok" while the process serves
//	GET  /readyz    200 "ok" when Backend.Ready says so, else 503 with the reason
//	GET  /metrics   the server's own Prometheus registry
//	POST /graphql   {"query": ..., "variables": {...}, "operationName": ...}
//	GET  /graphql   ?query=...&variables=<JSON>&operationName=...
//
// GraphQL answers 200 with {"data": ..., "errors": [...]} even when a field
// failed, as GraphQL clients expect; only a request that cannot be read at all
// (bad JSON, no query, too large, wrong media type) gets a 4xx, still with an
// {"errors": [...]} body. A field error carries, in its extensions, the gRPC
// code and catalogd ErrorReason of the failure, so clients branch on
// extensions.reason, never on message text.
//
// GraphQL's Int is 32 bits, so every 64-bit number (ids, revisions, indexes,
// sizes, epochs, milliseconds) is a decimal String, as protojson writes them;
// counts and TTLs in seconds, small in practice, are Ints and fail their field
// if one ever does not fit. Maps (metadata, ports) are lists of pairs sorted
// by key, and enums use the protobuf value names.
//
// A lookup of one thing (kv, service, instance, shardMap, lock, election)
// answers null when it does not exist; any other failure is an error (queue
// answers an empty queue). Listings (services, leases, Service.instances,
// locks, elections, barriers, queues) are sorted and page with after = the
// last name or id of the previous page. Fencing tokens, leases and waiter
// ids are decimal Strings like the other 64-bit numbers.
//
// The schema is assembled from one small function per area (clusterFields,
// kvFields, ...) listed in queryAreas; an area adds its fields there and two
// areas claiming one field name fail Schema.
//
// Invariant: this package only reads, through Backend; it holds no state of
// its own beyond the built schema, so any number of handlers may serve at once.
//
// It must not import the server package or consensus: the server gives it a
// Backend, which keeps the import graph one-way and lets tests use a fake.
package httpapi
