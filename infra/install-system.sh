#!/usr/bin/env bash
# Installs the system packages the project runs on, only those missing:
# Java 17 and Maven (Kafka), redis-server (Redis 7), chromium (browser tests),
# prometheus (for promtool, which tests the alert rules), openssl (throwaway certificates for the
# Redis TLS tests).
# Debian/Ubuntu only; uses sudo when not root.
set -euo pipefail

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-liberation)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-system: missing ${need[*]} and this is not a Debian-like system; install them by hand" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system: apt-get install ${need[*]}"
$sudo apt-get update -qq
# With recommends, as the browser tests were verified (chromium's recommends bring fonts and helpers).
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
