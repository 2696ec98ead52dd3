#!/usr/bin/env bash
# Install helm (a Go program) from its module into a per-user cache dir.
# Usage: scripts/install-helm.sh            -> prints the helm binary path on stdout
# Env:   SWITCHYARD_HELM_VERSION (default v3.22.0), SWITCHYARD_TOOLS_BIN (default ~/.cache/switchyard/bin)
# The first build takes a few minutes on 2 cores; later runs return at once.
set -euo pipefail

version="${SWITCHYARD_HELM_VERSION:-v3.22.0}"
bin_dir="${SWITCHYARD_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/bin}"
helm="$bin_dir/helm"

# `go install` leaves helm's own version string at its source default ("v3.22"), so the
# installed version is recorded in a stamp file next to the binary.
stamp="$bin_dir/helm.version"
if [[ -x "$helm" ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
    echo "$helm"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: 'go' is not on PATH; cannot build helm ${version}" >&2
    exit 3
fi
mkdir -p "$bin_dir"
# Build into a temp dir and move into place so a half-built binary is never picked up
# by a concurrent caller.
tmp="$(mktemp -d "$bin_dir/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "install-helm: building helm ${version} with $(go version | cut -d' ' -f3) (a few minutes the first time)" >&2
GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install "helm.sh/helm/v3/cmd/helm@${version}" >&2
mv -f "$tmp/helm" "$helm"
echo "$version" > "$stamp"
echo "$helm"
