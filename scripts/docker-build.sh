#!/usr/bin/env bash
# Builds the catalogd image: static catalogd and catctl binaries into
# docker/bin/, then docker/Dockerfile (FROM scratch, so no image is pulled).
#   scripts/docker-build.sh [TAG]   # image catalogd:TAG, TAG defaults to dev
# Works with the classic builder and with BuildKit: BuildKit is used when the
# docker CLI has its buildx component, the classic builder otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dev}
image="catalogd:$tag"

if ! command -v go >/dev/null 2>&1; then
  echo "docker-build: the go tool is not in PATH; install Go (see go.mod for the version) to build the binaries" >&2
  exit 1
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "docker-build: the docker CLI is not in PATH; install Docker Engine (or Docker Desktop) to build $image" >&2
  exit 1
fi
if ! server_arch=$(docker version --format '{{.Server.Arch}}' 2>/dev/null) || [ -z "$server_arch" ]; then
  echo "docker-build: the docker CLI cannot reach a Docker engine (docker version failed); start the engine or set DOCKER_HOST" >&2
  exit 1
fi

# The binaries run in the engine's Linux, whatever this host's OS is.
export CGO_ENABLED=0 GOOS=linux GOARCH="$server_arch"
mkdir -p docker/bin
for cmd in catalogd catctl; do
  go build -trimpath -ldflags "-s -w" -o "docker/bin/$cmd" "./cmd/$cmd"
done

# Recent docker CLIs refuse DOCKER_BUILDKIT=1 without buildx and warn without
# it; older ones build with the classic builder unless told otherwise.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
if [ "${DOCKER_BUILDKIT:-}" = 0 ]; then
  echo "docker-build: building $image with the classic builder (buildx is not installed)" >&2
fi
docker build --tag "$image" docker/
echo "built $image"
