#!/usr/bin/env bash
# Entrypoint of the postgres stand-in. It keeps the behaviour of the official image's
# docker-entrypoint.sh that the guide relies on (written here from that behaviour, not copied):
#
# - `postgres ...` (or arguments starting with `-`): as root, prepare $PGDATA and
#   /var/run/postgresql, then run again as the postgres user (gosu), so the server is PID 1.
# - An empty $PGDATA is initialised once: initdb with POSTGRES_USER / POSTGRES_PASSWORD (or their
#   _FILE variants) and POSTGRES_INITDB_ARGS, a `host all all all <method>` line in pg_hba.conf,
#   a temporary socket-only server that creates POSTGRES_DB and runs /docker-entrypoint-initdb.d
#   (*.sh executed when executable, sourced otherwise; *.sql, *.sql.gz, *.sql.xz, *.sql.zst fed
#   to psql), then a fast stop.
# - Anything else is executed as given.
set -Eeo pipefail

log() { printf '%s: %s\n' "${0##*/}" "$*"; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# VAR or VAR_FILE (Docker secrets), never both.
from_env_or_file() {
    local name=$1 default=${2:-} file_name="${1}_FILE"
    local value=${!name:-} file=${!file_name:-}
    if [[ -n "$value" && -n "$file" ]]; then
        die "both $name and $file_name are set; they are exclusive"
    fi
    if [[ -n "$file" ]]; then
        value=$(<"$file")
    fi
    export "$name"="${value:-$default}"
    unset "$file_name"
}

load_settings() {
    from_env_or_file POSTGRES_PASSWORD
    from_env_or_file POSTGRES_USER postgres
    from_env_or_file POSTGRES_DB "$POSTGRES_USER"
    from_env_or_file POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    initialised=
    if [[ -s "$PGDATA/PG_VERSION" ]]; then
        initialised=yes
    fi
}

prepare_directories() {
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" 2>/dev/null || true
    mkdir -p /var/run/postgresql 2>/dev/null || true
    chmod 3775 /var/run/postgresql 2>/dev/null || true
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        [[ "$(id -u)" != 0 ]] || find "$POSTGRES_INITDB_WALDIR" ! -user postgres -exec chown postgres {} +
        chmod 0700 "$POSTGRES_INITDB_WALDIR"
    fi
    if [[ "$(id -u)" == 0 ]]; then
        find "$PGDATA" ! -user postgres -exec chown postgres {} +
        find /var/run/postgresql ! -user postgres -exec chown postgres {} +
    fi
}

require_password() {
    if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
        cat >&2 <<'EOF'
Error: the database is not initialised and no superuser password is set.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value, or
       POSTGRES_HOST_AUTH_METHOD=trust to accept every connection without one (not advised).
EOF
        exit 1
    fi
    if [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]]; then
        log 'WARNING: POSTGRES_HOST_AUTH_METHOD=trust accepts every connection without a password' >&2
    fi
}

run_initdb() {
    # initdb wants the current UID in the passwd database: fake an entry when it is missing.
    local uid gid fake_passwd='' fake_group=''
    uid=$(id -u)
    gid=$(id -g)
    if ! getent passwd "$uid" >/dev/null 2>&1; then
        local lib
        for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
            [[ -s "$lib" ]] || continue
            fake_passwd=$(mktemp)
            fake_group=$(mktemp)
            printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" >"$fake_passwd"
            printf 'postgres:x:%s:\n' "$gid" >"$fake_group"
            export LD_PRELOAD=$lib NSS_WRAPPER_PASSWD=$fake_passwd NSS_WRAPPER_GROUP=$fake_group
            break
        done
    fi
    # The function's own arguments carry the WAL directory option into the eval.
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        set -- --waldir "$POSTGRES_INITDB_WALDIR"
    else
        set --
    fi
    # POSTGRES_INITDB_ARGS is shell words (quotes allowed), hence eval. The password file holds
    # a newline so that an empty password is still a non-empty file.
    eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"' "$@"'
    if [[ -n "$fake_passwd" ]]; then
        rm -f "$fake_passwd" "$fake_group"
        unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    fi
}

# Remote (TCP) connections: the method asked for, else the server's password_encryption.
allow_host_connections() {
    [[ "${1:-}" != postgres ]] || shift
    local method
    method=$(postgres -C password_encryption "$@")
    : "${POSTGRES_HOST_AUTH_METHOD:=$method}"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

# psql as the superuser against the temporary server (default socket directory), in database
# $1 (empty: psql's default).
psql_in() {
    local db=$1
    shift
    local args=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    [[ -z "$db" ]] || args+=(--dbname "$db")
    PGHOST='' PGHOSTADDR='' "${args[@]}" "$@"
}

# psql in POSTGRES_DB. Sourced init scripts may call it by the official image's name too.
sql() { psql_in "$POSTGRES_DB" "$@"; }
docker_process_sql() { sql "$@"; }

temporary_server_start() {
    [[ "${1:-}" != postgres ]] || shift
    # No TCP, and NOTIFY_SOCKET cleared so a supervisor is not told "ready" by this one.
    local opts
    opts=$(printf '%q ' "$@" -c "listen_addresses=" -p "${PGPORT:-5432}")
    NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$opts" -w start
}

temporary_server_stop() {
    PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

create_database() {
    local found
    found=$(psql_in postgres --set db="$POSTGRES_DB" --tuples-only \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [[ -z "${found//[[:space:]]/}" ]]; then
        psql_in postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
}

run_init_files() {
    local f
    for f in "$@"; do
        [[ -e "$f" ]] || continue
        case "$f" in
            *.sh)
                if [[ -x "$f" ]]; then
                    log "running $f"
                    "$f"
                else
                    log "sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) log "running $f"; sql -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | sql ;;
            *.sql.xz) log "running $f"; xzcat "$f" | sql ;;
            *.sql.zst) log "running $f"; zstd -dc "$f" | sql ;;
            *) log "ignoring $f" ;;
        esac
    done
}

wants_help() {
    local a
    for a in "$@"; do
        case "$a" in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
    done
    return 1
}

main() {
    if [[ "${1:0:1}" == - ]]; then
        set -- postgres "$@"
    fi
    if [[ "$1" == postgres ]] && ! wants_help "$@"; then
        load_settings
        prepare_directories
        if [[ "$(id -u)" == 0 ]]; then
            exec gosu postgres "${BASH_SOURCE[0]}" "$@"
        fi
        if [[ -z "$initialised" ]]; then
            require_password
            # Fail early (before initdb) when the init directory cannot be read.
            ls /docker-entrypoint-initdb.d/ >/dev/null
            run_initdb
            allow_host_connections "$@"
            export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
            temporary_server_start "$@"
            create_database
            run_init_files /docker-entrypoint-initdb.d/*
            temporary_server_stop
            unset PGPASSWORD
            log 'PostgreSQL init process complete; ready for start up.'
        else
            log 'PostgreSQL data directory already holds a database; skipping initialisation.'
        fi
    fi
    exec "$@"
}

main "$@"
