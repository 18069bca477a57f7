#!/bin/sh
# Entrypoint of the nginx stand-in, keeping the official image's behaviour (written here from
# that behaviour, not copied):
# - for `nginx` and `nginx-debug`, every file of /docker-entrypoint.d runs first, in version
#   order: executable *.envsh are sourced (their exports reach the later hooks and nginx),
#   executable *.sh are run, anything else is skipped; NGINX_ENTRYPOINT_QUIET_LOGS silences it;
# - then the command is exec'd, so the nginx master is PID 1.
# One addition: nginx.org's build runs workers as `nginx` when the configuration names no user;
# Debian's build would use `nobody`. So, when the configuration names no user (it accepts one
# more), `user nginx;` is appended to the command's -g directives.
set -e

say() {
    [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: $*"
}

run_hooks() {
    hooks=$(find -L /docker-entrypoint.d/ -mindepth 1 -type f -print 2>/dev/null | sort -V)
    if [ -z "$hooks" ]; then
        say "No files found in /docker-entrypoint.d/, skipping configuration"
        return 0
    fi
    say "/docker-entrypoint.d/ is not empty, will attempt to perform configuration"
    say "Looking for shell scripts in /docker-entrypoint.d/"
    # Newline-separated names (no spaces expected there); no pipeline, so sourced exports stay.
    old_ifs=$IFS
    IFS='
'
    for hook in $hooks; do
        IFS=$old_ifs
        case "$hook" in
            *.envsh)
                if [ -x "$hook" ]; then
                    say "Sourcing $hook"
                    # shellcheck disable=SC1090
                    . "$hook"
                else
                    say "Ignoring $hook, not executable"
                fi
                ;;
            *.sh)
                if [ -x "$hook" ]; then
                    say "Launching $hook"
                    "$hook"
                else
                    say "Ignoring $hook, not executable"
                fi
                ;;
            *) say "Ignoring $hook" ;;
        esac
    done
    IFS=$old_ifs
    say "Configuration complete; ready for start up"
}

# Runs the command, with `user nginx;` added to its -g directives.
exec_with_default_user() {
    prog=$1
    shift
    added=
    after_g=
    for arg do
        shift
        if [ -n "$after_g" ]; then
            arg="$arg user nginx;"
            added=yes
            after_g=
        fi
        [ "$arg" != -g ] || after_g=yes
        set -- "$@" "$arg"
    done
    [ -n "$added" ] || set -- "$@" -g "user nginx;"
    exec "$prog" "$@"
}

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
    run_hooks
    if [ "$(id -u)" = 0 ] && "$1" -t -q -g 'user nginx;' >/dev/null 2>&1; then
        exec_with_default_user "$@"
    fi
fi

exec "$@"
