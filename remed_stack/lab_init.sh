#!/bin/bash
# PID 1 of one lab host ("boot", then its init). Runs inside the host's network namespace, in
# fresh PID, mount and UTS namespaces (unshare), so that the process table, the hostname and the
# paths below are the host's own. Started by remed_stack/lab.py; output goes to its init.log.
# Usage: [REMED_LAB_INIT=supervisord|systemd] lab_init.sh HOSTNAME HOST_DIR BIND_PATH...
# The init is supervisord unless REMED_LAB_INIT says systemd (a lab system whose services run
# under systemd, chaos/README.md): then the host also gets a cgroup subtree of its own in every
# hierarchy and a cgroup namespace rooted there, so its systemd sees and manages only its own.
set -euo pipefail
host=$1 dir=$2
shift 2
init=${REMED_LAB_INIT:-supervisord}
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
echo "$host: booted $(date -u +%FT%TZ) ($init)"
if [ "$init" != systemd ]; then
  exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
fi
# systemd: this shell (PID 1 here) joins remed-lab-<host>, a child of its cgroup, in each
# hierarchy the machine has
# (`ip netns exec` left /sys/fs/cgroup empty, so each is mounted for a moment on a scratch dir),
# then execs systemd in a new cgroup namespace, where that subtree is the root it mounts.
scratch=/run/.remed-lab-cgroup
mkdir -p "$scratch"
# Controllers no hierarchy has yet would be mounted by systemd at their root, shared by every
# systemd host: make their hierarchies now (grouped as systemd groups them), so each host joins
# its own subtree in them too.
declare -A unmounted=()
while read -r name hierarchy _ enabled; do
  [ "$hierarchy" = 0 ] && [ "$enabled" = 1 ] && unmounted[$name]=1
done < <(tail -n +2 /proc/cgroups)
for pair in cpu,cpuacct net_cls,net_prio; do
  if [ -n "${unmounted[${pair%,*}]:-}" ] && [ -n "${unmounted[${pair#*,}]:-}" ]; then
    unset "unmounted[${pair%,*}]" "unmounted[${pair#*,}]"
    unmounted[$pair]=1
  fi
done
for controllers in "${!unmounted[@]}"; do
  # (a hierarchy with no cgroup but its root goes when unmounted: join a child at once)
  mount -t cgroup -o "$controllers" cgroup "$scratch"
  mkdir -p "$scratch/remed-lab-$host"
  echo 0 >"$scratch/remed-lab-$host/cgroup.procs"
  umount "$scratch"
done
# (read whole first: each move lengthens a line of the file being read)
mapfile -t hierarchies < /proc/self/cgroup
for line in "${hierarchies[@]}"; do
  IFS=: read -r _ controllers path <<<"$line"
  [ "${path##*/}" != "remed-lab-$host" ] || continue  # joined above
  if [ -n "$controllers" ]; then
    mount -t cgroup -o "$controllers" cgroup "$scratch"
  else
    mount -t cgroup2 cgroup2 "$scratch"
  fi
  # below the cgroup it is in (a limit the machine sets there keeps applying)
  sub="$scratch${path%/}/remed-lab-$host"
  mkdir -p "$sub"
  if [ -e "$scratch/cpuset.cpus" ]; then
    cat "$scratch${path%/}/cpuset.cpus" >"$sub/cpuset.cpus"
    cat "$scratch${path%/}/cpuset.mems" >"$sub/cpuset.mems"
  fi
  echo 0 >"$sub/cgroup.procs"
  umount "$scratch"
done
rmdir "$scratch"
export container=remed-lab
exec unshare --cgroup -- /lib/systemd/systemd --system
