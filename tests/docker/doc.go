// Package docker tests the catalogd image and docker/compose.yaml on a real
// Docker engine: it builds the image with scripts/docker-build.sh, runs the
// 3-member compose cluster under a project name of its own, kills and
// restarts containers, and talks to the members through their published
// ports with the sdk and through catctl inside the containers.
//
// The tests skip, saying what is missing, when there is no Docker engine or
// no compose tool (the docker compose plugin or docker-compose v1). They
// remove their containers, volumes, network and image when they end.
//
// It may import anything in the module; nothing imports it.
package docker
