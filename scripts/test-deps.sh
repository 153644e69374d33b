#!/usr/bin/env bash
# Installs what voxgate's tests use beyond cargo: Debian packages and Python packages for the
# third-party clients the tests drive (real redis-server, nginx, grpcio, prometheus_client).
# Idempotent and quiet when everything is there. Used by scripts/test.sh and .ci/run.
set -euo pipefail

APT_PACKAGES=(redis-server redis-tools)
PIP_PACKAGES=()
# The Envoy rate limit service test: grpcio and the stubs generated from Envoy's own protos.
PIP_PACKAGES+=(grpcio xds-protos)
# Forward-auth: a real nginx (auth_request) in front of a test upstream.
APT_PACKAGES+=(nginx)
# /metrics: parsed with the Prometheus project's Python parsers.
PIP_PACKAGES+=(prometheus_client)
# The OpenAPI test: schemathesis fuzzes the live server from its /openapi.json (4.x CLI flags).
PIP_PACKAGES+=("schemathesis>=4.32,<5")

missing_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_apt+=("$p")
done
if [ ${#missing_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing_apt[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing_apt[@]}" >/dev/null
  }
fi

if [ ${#PIP_PACKAGES[@]} -gt 0 ]; then
  missing_pip=()
  for p in "${PIP_PACKAGES[@]}"; do
    name=${p%%[=<>]*}
    python3 -m pip show -q "$name" >/dev/null 2>&1 || missing_pip+=("$p")
  done
  if [ ${#missing_pip[@]} -gt 0 ]; then
    echo "installing Python packages: ${missing_pip[*]}"
    python3 -m pip install -q --disable-pip-version-check "${missing_pip[@]}"
  fi
fi
