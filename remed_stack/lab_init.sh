#!/bin/bash
# PID 1 of one lab host. Runs inside the host's network namespace, in fresh PID, mount and UTS
# namespaces (unshare), so that a process table, hostname and the paths below are the host's own.
# Usage: lab_init.sh HOSTNAME HOST_DIR BIND_PATH...
set -euo pipefail
host=$1 dir=$2
shift 2
hostname "$host"
# Make every mount below private to this host, whatever the parent's propagation is.
mount --make-rprivate /
for path in "$@"; do
  src="$dir/root$path"
  if [ -d "$src" ]; then
    mkdir -p "$path"
  elif [ ! -e "$path" ]; then
    touch "$path"
  fi
  mount --bind "$src" "$path"
done
mkdir -p /run/sshd /var/log/supervisor
chmod 0755 /run/sshd
chmod 1777 /tmp /var/tmp
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
