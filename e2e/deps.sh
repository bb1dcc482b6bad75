#!/usr/bin/env bash
# Installs what the end-to-end suite drives besides the sidekey binary,
# when it is missing: Debian packages (as root, or with sudo -n). `make e2e`
# runs it; on a machine that has everything it changes nothing.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo -n"
fi

missing=()
# chromium: the status page's test (TestStatusPage) drives it headless.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The forward proxy's clients (TestForwardClients): curl, git, openssl,
# Python's requests; Node's undici comes from npm in the test itself.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 && python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)

if [ ${#missing[@]} -gt 0 ]; then
	echo "e2e: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >/dev/null
	$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
