#!/usr/bin/env bash
# Builds the pinned control plane (etcd, kube-apiserver, kubectl) and kwok into
# BIN (default: <repo>/.cache/bin). Go's build cache makes reruns fast.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$(cd "$here/../.." && pwd)/.cache/bin}
mkdir -p "$bin"
K8S_VERSION=v1.34.4
KWOK_VERSION=v0.7.0
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
cd "$here"
for c in etcd kube-apiserver kubectl; do
  echo "building $c -> $bin/$c" >&2
  go build -trimpath -ldflags "$ldflags" -o "$bin/$c" "./cmd/$c"
done
if [ ! -x "$bin/kwok" ] || ! "$bin/kwok" --version 2>/dev/null | grep -q "$KWOK_VERSION"; then
  echo "building kwok $KWOK_VERSION -> $bin/kwok" >&2
  GOBIN="$bin" GOFLAGS=-mod=mod go install -trimpath -ldflags "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
