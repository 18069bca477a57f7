#!/bin/sh
# With NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE set, sets worker_processes in nginx.conf to the
# CPUs this container may use (the cgroup v2 quota when there is one, else the online CPUs), as
# the official image does.
set -eu
me=${0##*/}
[ -n "${NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE:-}" ] || exit 0
conf=/etc/nginx/nginx.conf
touch "$conf" 2>/dev/null || { echo >&2 "$me: error: can not modify $conf (read-only file system?)"; exit 0; }

ncpu=$(getconf _NPROCESSORS_ONLN)
if [ -r /sys/fs/cgroup/cpu.max ]; then
    read -r quota period </sys/fs/cgroup/cpu.max
    if [ "$quota" != max ] && [ "$period" -gt 0 ]; then
        q=$(( (quota + period - 1) / period ))
        [ "$q" -ge 1 ] && [ "$q" -lt "$ncpu" ] && ncpu=$q
    fi
fi
sed -i.bak -E "s/^(worker_processes)(.*)$/# changed by $me\n#\1\2\n\1 $ncpu;/" "$conf"
