#!/bin/bash
# PID 1 of one lab host ("boot", then supervisord). Runs inside the host's network namespace, in
# fresh PID, mount and UTS namespaces (unshare), so that the process table, the hostname and the
# paths below are the host's own. Started by remed_stack/lab.py; output goes to its init.log.
# Usage: lab_init.sh HOSTNAME HOST_DIR BIND_PATH...
set -euo pipefail
host=$1 dir=$2
shift 2
hostname "$host"
# Make every mount below private to this host, whatever the parent's propagation is.
mount --make-rprivate /
# Hold the host's tree open: once /tmp or /run is covered, a state dir below it (REMED_RUN_DIR
# under /tmp, say) is no longer reachable by name, but it stays reachable through this fd.
# --no-canonicalize keeps mount from resolving the fd link back to that hidden name.
exec 3<"$dir/root"
root=/proc/self/fd/3
for path in "$@"; do
  src="$root$path"
  if [ -d "$src" ]; then
    mkdir -p "$path"
  elif [ ! -e "$path" ]; then
    touch "$path"
  fi
  mount --no-canonicalize --bind "$src" "$path"
done
exec 3<&-
mkdir -p /run/sshd /var/log/supervisor
chmod 0755 /run/sshd
chmod 1777 /tmp /var/tmp
echo "$host: booted $(date -u +%FT%TZ)"
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
