#!/usr/bin/env bash
# Installs the Debian packages remed's stack, lab and tests use; a no-op when all are present.
set -euo pipefail
packages=(
  openssh-server openssh-client iproute2 nftables util-linux procps sudo curl ca-certificates
  openjdk-17-jre-headless maven kcat supervisor python3 openssl
  redis-server postgresql memcached nginx-light stress-ng prometheus prometheus-alertmanager
  prometheus-blackbox-exporter
  python3-redis python3-psycopg2
  build-essential
)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "debian: all ${#packages[@]} packages present"
  exit 0
fi
echo "debian: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "debian: need root to install packages (run make setup as root, or install: ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: Debian's maintainer scripts must not start redis/postgres/nginx on the host;
# the lab runs its own copies inside the lab hosts.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
