#!/usr/bin/env bash
# Instructions per request on the proxy's own path, counted by cachegrind:
# sidekey (BenchmarkServe) beside the bare fasthttp proxy
# (BenchmarkServeBare), both through the server over scripted connections.
# Unlike ns/op this does not move with the machine's load: two runs of the
# same build agree within a few tens of instructions. Each figure is the
# difference of two runs (20,000 and 60,000 requests) over 40,000, so that
# start-up and warm-up cancel out; the garbage collector is off so that its
# cycles do not land in one run and not the other.
#
#   bench/instructions.sh            # needs valgrind (Debian: apt-get install valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null 2>&1 || {
	echo "instructions: valgrind is required (apt-get install valgrind)" >&2
	exit 1
}

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/proxy.test" ./proxy/

# valgrind 3.19 does not know RDTSCP, which the Go runtime executes when a
# runtime lock is contended (runtime.cputicks): the program would die of
# SIGILL part way, its count that of a fraction of the requests.
# GODEBUG=cpu.rdtscp=off makes the runtime use the instruction valgrind
# knows. A run counts only when the benchmark finished (PASS); one that did
# not is made again.
refs() { # benchmark, iterations -> instructions executed
	local out try
	for try in 1 2 3; do
		out=$(GODEBUG=cpu.rdtscp=off GOGC=off GOMAXPROCS=1 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
			"$bin/proxy.test" -test.run '^$' -test.bench "^$1\$" -test.cpu 1 -test.benchtime "$2x" 2>&1)
		if grep -q '^PASS$' <<<"$out"; then
			awk '/I *refs:/ { gsub(",", "", $NF); print $NF }' <<<"$out"
			return
		fi
	done
	echo "instructions: $1 did not finish under valgrind in 3 tries" >&2
	exit 1
}

perop() { echo $((($(refs "$1" 60000) - $(refs "$1" 20000)) / 40000)); }

sk=$(perop BenchmarkServe)
bare=$(perop BenchmarkServeBare)
echo "instructions per request: sidekey $sk, bare fasthttp proxy $bare, ratio $(awk -v a="$sk" -v b="$bare" 'BEGIN { printf "%.2f", a / b }')"
