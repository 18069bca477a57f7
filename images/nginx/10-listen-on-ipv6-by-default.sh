#!/bin/sh
# Adds an IPv6 listener to the image's own default server, as the official image does: only when
# the container has IPv6 and conf.d/default.conf is still the file the image shipped (a mounted
# or edited one is left alone).
set -e
me=${0##*/}
say() { [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$me: info: $*"; }
conf=/etc/nginx/conf.d/default.conf

[ -f /proc/net/if_inet6 ] || { say "ipv6 not available"; exit 0; }
[ -f "$conf" ] || { say "$conf is not a file or does not exist"; exit 0; }
touch "$conf" 2>/dev/null || { say "can not modify $conf (read-only file system?)"; exit 0; }
if grep -q 'listen  \[::\]:80;' "$conf"; then
    say "IPv6 listen already enabled"
    exit 0
fi
md5sum -c --status /usr/share/nginx/default.conf.md5 2>/dev/null || {
    say "$conf differs from the packaged version"
    exit 0
}
sed -i 's/^\( *\)listen 80;$/\1listen 80;\n\1listen  [::]:80;/' "$conf"
say "Enabled listen on IPv6 in $conf"
