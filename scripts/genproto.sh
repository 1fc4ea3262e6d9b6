#!/usr/bin/env bash
# Regenerates the Go code in api/catalogpb from api/catalogd/v1/*.proto.
# Needs protoc (Debian: protobuf-compiler); installs the pinned Go plugins.
# The protos live under catalogd/v1/ so their registered names cannot clash
# with other modules' (etcd registers a "raft.proto" of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
GOBIN="$(go env GOPATH)/bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
PATH="$GOBIN:$PATH" protoc -I api \
  --go_out=. --go_opt=module=github.com/catalogd/catalogd \
  --go-grpc_out=. --go-grpc_opt=module=github.com/catalogd/catalogd \
  api/catalogd/v1/*.proto
