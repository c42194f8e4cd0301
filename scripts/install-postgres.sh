#!/usr/bin/env bash
# Installs PostgreSQL's server binaries from Debian's packages when they are
# missing: the tests run the PostgreSQL store against a real server.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL's server is not installed; install Debian's 'postgresql' package" >&2
    exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
