#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: sourced by scripts/test.sh (and usable by
# hand: `source scripts/pg-cluster.sh && pg_cluster_start`).
#
# pg_cluster_start installs PostgreSQL from Debian's packages when it is missing, creates
# a cluster in a temporary directory owned by an unprivileged user (initdb refuses root),
# starts it on 127.0.0.1 on a free port, and exports (not ORCHESTRATOR_…: that prefix
# overrides config keys of the server under test):
#   TEST_POSTGRES_DSN   superuser DSN of the cluster (tests create a database each)
#   TEST_POSTGRES_BIN   the server's bin directory (tests that restart a server)
#   TEST_POSTGRES_USER  the user that owns clusters ("" when not root)
# pg_cluster_stop stops it and removes the directory. Any failure is fatal and loud.

pg_cluster_fail() {
    echo "pg-cluster: $*" >&2
    exit 1
}

pg_cluster_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_cluster_install() {
    [[ -n "$(pg_cluster_bin)" ]] && return 0
    echo "pg-cluster: PostgreSQL is not installed; installing Debian's postgresql package" >&2
    [[ "$(id -u)" == 0 ]] || pg_cluster_fail "PostgreSQL is missing and installing it needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || pg_cluster_fail "apt-get update failed"
    apt-get install -y -q --no-install-recommends postgresql </dev/null >&2 \
        || pg_cluster_fail "apt-get install postgresql failed"
    [[ -n "$(pg_cluster_bin)" ]] || pg_cluster_fail "postgresql installed but no server binaries found"
}

# Runs a command as the cluster's owner.
pg_cluster_as() {
    if [[ -n "$TEST_POSTGRES_USER" ]]; then
        runuser -u "$TEST_POSTGRES_USER" -- "$@"
    else
        "$@"
    fi
}

# A port outside the kernel's ephemeral range (one inside may be an outgoing connection's
# local port, which PostgreSQL then cannot listen on) that nothing listens on or holds.
pg_cluster_free_port() {
    local low high port
    read -r low high </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 1 200); do
        if (( low > 12000 )); then
            port=$(( 10000 + RANDOM % (low - 10000) ))
        else
            port=$(( high + 1 + RANDOM % (65535 - high) ))
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        if command -v python3 >/dev/null; then
            python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' \
                "$port" 2>/dev/null || continue
        fi
        echo "$port"
        return 0
    done
    pg_cluster_fail "no free port found"
}

pg_cluster_start() {
    pg_cluster_install
    TEST_POSTGRES_BIN="$(pg_cluster_bin)"
    TEST_POSTGRES_USER=""
    if [[ "$(id -u)" == 0 ]]; then
        TEST_POSTGRES_USER=postgres
        if ! id -u postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin postgres \
                || pg_cluster_fail "cannot create the postgres user"
        fi
    fi
    export TEST_POSTGRES_BIN TEST_POSTGRES_USER
    PG_CLUSTER_DIR="$(mktemp -d /tmp/orchestrator-pg.XXXXXX)"
    chmod 755 "$PG_CLUSTER_DIR"
    [[ -n "$TEST_POSTGRES_USER" ]] && chown "$TEST_POSTGRES_USER" "$PG_CLUSTER_DIR"
    pg_cluster_as "$TEST_POSTGRES_BIN/initdb" -D "$PG_CLUSTER_DIR/data" -U postgres \
        --auth=trust -E UTF8 --locale=C --no-sync >"$PG_CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$PG_CLUSTER_DIR/initdb.log" >&2; pg_cluster_fail "initdb failed"; }
    local port
    port="$(pg_cluster_free_port)"
    # Tests run in parallel, each with its own database and pool: allow many connections.
    # fsync is off for tests (the cluster is thrown away; they check behaviour, not
    # disks); PG_CLUSTER_DURABLE=1 keeps the durable defaults, for benchmarks.
    local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [[ "${PG_CLUSTER_DURABLE:-}" == 1 ]] && durability=""
    pg_cluster_as "$TEST_POSTGRES_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -w -t 60 \
        -l "$PG_CLUSTER_DIR/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_CLUSTER_DIR \
            -c max_connections=600 -c shared_buffers=128MB $durability" start >/dev/null \
        || { cat "$PG_CLUSTER_DIR/server.log" >&2; pg_cluster_fail "PostgreSQL did not start"; }
    export TEST_POSTGRES_DSN="postgres://postgres@127.0.0.1:$port/postgres"
    PG_CLUSTER_STARTED=1
    echo "pg-cluster: PostgreSQL $("$TEST_POSTGRES_BIN/postgres" -V | awk '{print $3}') on 127.0.0.1:$port ($PG_CLUSTER_DIR)" >&2
}

pg_cluster_stop() {
    [[ "${PG_CLUSTER_STARTED:-}" == 1 ]] || return 0
    pg_cluster_as "$TEST_POSTGRES_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate \
        -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_CLUSTER_DIR"
    PG_CLUSTER_STARTED=0
}
