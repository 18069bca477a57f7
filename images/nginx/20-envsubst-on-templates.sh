#!/bin/sh
# Renders templates with the environment, as the official image does: each
# $NGINX_ENVSUBST_TEMPLATE_DIR/**/NAME.template (default /etc/nginx/templates, suffix
# $NGINX_ENVSUBST_TEMPLATE_SUFFIX) becomes $NGINX_ENVSUBST_OUTPUT_DIR/**/NAME (default
# /etc/nginx/conf.d). Only variables that are set (and match $NGINX_ENVSUBST_FILTER, a regex)
# are replaced, so nginx's own $variables survive. *.stream-template files go to
# $NGINX_ENVSUBST_STREAM_OUTPUT_DIR (default /etc/nginx/stream-conf.d), and a `stream` block
# including them is appended to nginx.conf when it has none.
set -e
me=${0##*/}
say() { [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$me: $*"; }

template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
stream_suffix=${NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX:-.stream-template}
stream_output_dir=${NGINX_ENVSUBST_STREAM_OUTPUT_DIR:-/etc/nginx/stream-conf.d}
filter=${NGINX_ENVSUBST_FILTER:-}

[ -d "$template_dir" ] || exit 0

# `${NAME} ` for every variable set whose name matches the filter.
vars=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | grep -E -- "${filter:-.}" | sed 's/.*/${&}/' | tr '\n' ' ')

render() { # suffix output-directory
    find -L "$template_dir" -type f -name "*$1" -print | while read -r template; do
        rel=${template#"$template_dir/"}
        out="$2/${rel%"$1"}"
        mkdir -p "$(dirname "$out")"
        say "Running envsubst on $template to $out"
        envsubst "$vars" <"$template" >"$out"
    done
}

if [ ! -w "$output_dir" ]; then
    say "ERROR: $template_dir exists, but $output_dir is not writable"
    exit 0
fi
render "$suffix" "$output_dir"

if [ -n "$(find -L "$template_dir" -type f -name "*$stream_suffix" -print)" ]; then
    mkdir -p "$stream_output_dir"
    if [ ! -w "$stream_output_dir" ]; then
        say "ERROR: $template_dir exists, but $stream_output_dir is not writable"
        exit 0
    fi
    conf=/etc/nginx/nginx.conf
    if grep -qE '^[[:space:]]*stream[[:space:]]*\{' "$conf"; then
        say "$conf has a stream block; include $stream_output_dir/*.conf in it for the stream templates"
    elif touch "$conf" 2>/dev/null; then
        say "Appending a stream block to $conf including $stream_output_dir/*.conf"
        printf '\n# added by %s\nstream {\n    include %s/*.conf;\n}\n' "$me" "$stream_output_dir" >>"$conf"
    else
        say "info: can not modify $conf (read-only file system?)"
        exit 0
    fi
    render "$stream_suffix" "$stream_output_dir"
fi
