#!/usr/bin/env bash
# Install a pinned Go program the tests need (helm, promtool) from its module into a
# per-user cache dir, once.
# Usage: scripts/install-go-tool.sh helm|promtool   -> prints the binary's path on stdout
# Env:   SWITCHYARD_HELM_VERSION (default v3.22.0),
#        SWITCHYARD_PROMTOOL_VERSION (default v0.316.0, the module of Prometheus 3.16.0),
#        SWITCHYARD_TOOLS_BIN (default ~/.cache/switchyard/bin)
# The first build takes a few minutes on 2 cores; later runs return at once.
set -euo pipefail

tool="${1:?usage: install-go-tool.sh helm|promtool}"
case "$tool" in
    helm) module="helm.sh/helm/v3/cmd/helm"; version="${SWITCHYARD_HELM_VERSION:-v3.22.0}" ;;
    promtool) module="github.com/prometheus/prometheus/cmd/promtool"; version="${SWITCHYARD_PROMTOOL_VERSION:-v0.316.0}" ;;
    *) echo "install-go-tool: unknown tool '$tool' (helm or promtool)" >&2; exit 2 ;;
esac
bin_dir="${SWITCHYARD_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/bin}"
binary="$bin_dir/$tool"

# `go install` leaves a program's own version string at its source default, so the
# installed version is recorded in a stamp file next to the binary.
stamp="$bin_dir/$tool.version"
if [[ -x "$binary" ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
    echo "$binary"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-go-tool: 'go' is not on PATH; cannot build $tool ${version}" >&2
    exit 3
fi
mkdir -p "$bin_dir"
# Build into a temp dir and move into place so a half-built binary is never picked up
# by a concurrent caller.
tmp="$(mktemp -d "$bin_dir/.$tool-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "install-go-tool: building $tool ${version} with $(go version | cut -d' ' -f3) (a few minutes the first time)" >&2
GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install "${module}@${version}" >&2
mv -f "$tmp/$tool" "$binary"
echo "$version" > "$stamp"
echo "$binary"
