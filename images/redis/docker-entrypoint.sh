#!/bin/sh
# Entrypoint of the redis stand-in, keeping the official image's behaviour (written here from
# that behaviour, not copied):
# - options only (`--port 0`) or a `*.conf` first argument mean `redis-server ...`;
# - `redis-server` started as root gives the working directory to redis and runs again as
#   redis (gosu), so the server is PID 1; started as another user (Compose `user:`) it stays so;
# - the official binary is patched to start with protected mode off: here the same default is
#   an argument, added first so a later `--protected-mode` still wins (with a config file
#   Debian's default applies unless the file sets it);
# - a umask of 0022 becomes 0077 (the server's files are private);
# - anything else is executed as given.
set -e

case "${1:-}" in
    -*| *.conf) set -- redis-server "$@" ;;
esac

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . ! -user redis -exec chown redis {} +
    exec gosu redis "$0" "$@"
fi

if [ "${1:-}" = redis-server ]; then
    case "${2:-}" in
        "" | -*)
            shift
            set -- redis-server --protected-mode no "$@"
            ;;
    esac
fi

if [ "$(umask)" = 0022 ]; then
    umask 0077
fi

exec "$@"
