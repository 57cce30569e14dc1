#!/usr/bin/env bash
# Installs the given Debian packages if any is missing. Idempotent; quiet when everything is present.
set -euo pipefail
missing=()
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Services must not be started by package scripts (there may be no init system); tests start their own.
printf '#!/bin/sh\nexit 101\n' > /tmp/metricsd-policy-rc.d && chmod +x /tmp/metricsd-policy-rc.d
if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO cp /tmp/metricsd-policy-rc.d /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
