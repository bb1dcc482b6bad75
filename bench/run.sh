#!/usr/bin/env bash
# Peer benchmark entry point: installs the peers and wrk when they are
# missing (Debian packages), builds the harness and runs it from the module
# root. Every flag goes to peerbench, for example a quick run:
#
#   bench/run.sh -duration 3s -repeats 1 -conns 32
#   bench/run.sh -proxies sidekey,nginx,fasthttp -layouts capped
#
# A peer that cannot be installed is skipped and named in the report.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
for tool in nginx haproxy caddy wrk; do
	have "$tool" || missing+=("$tool")
done

if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		sudo="sudo -n"
	fi
	echo "bench: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >/dev/null 2>&1 || echo "bench: apt-get update failed" >&2
	for pkg in "${missing[@]}"; do
		if ! $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
			echo "bench: could not install $pkg" >&2
			continue
		fi
		# Debian starts a freshly installed server; it would take CPU (and
		# port 80) away from the measurements.
		case "$pkg" in
		nginx | haproxy | caddy)
			$sudo service "$pkg" stop >/dev/null 2>&1 || true
			;;
		esac
	done
fi

have wrk || {
	echo "bench: wrk is required" >&2
	exit 1
}

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/peerbench" ./bench/cmd/peerbench
"$bin/peerbench" -via bench/run.sh "$@"
