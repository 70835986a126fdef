# shellcheck shell=bash
# Sourced by .ci/run: gives the tests a real PostgreSQL in ORCHESTRA_TEST_PG_URL.
#
# If ORCHESTRA_TEST_PG_URL is already set, it is used as is. Otherwise a throwaway server is started: initdb in a
# fresh temporary folder, listening on 127.0.0.1 only, on a free port, trust authentication, one database
# (orchestra_test); an EXIT trap stops it and deletes the folder. PostgreSQL is installed with apt-get when its
# binaries are missing (needs root). Sourcing it twice reuses the first server. Prints one line saying what it did.
# ORCHESTRA_CI_SKIP_POSTGRES=1 skips it (the postgres tests then skip).

_orchestra_pg_main() {
    if [ -n "${ORCHESTRA_TEST_PG_URL:-}" ]; then
        echo "postgres: using the server in ORCHESTRA_TEST_PG_URL (${ORCHESTRA_TEST_PG_URL%%@*}@...)" | sed 's#://\([^:@]*\):[^@]*@#://\1:***@#'
        return 0
    fi
    if [ "${ORCHESTRA_CI_SKIP_POSTGRES:-0}" = 1 ]; then
        echo "postgres: skipped (ORCHESTRA_CI_SKIP_POSTGRES=1); the postgres tests will skip"
        return 0
    fi

    local bin installed=""
    bin=$(_orchestra_pg_bindir)
    if [ -z "$bin" ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres: no PostgreSQL binaries and not root to install them; set ORCHESTRA_TEST_PG_URL or ORCHESTRA_CI_SKIP_POSTGRES=1" >&2
            return 1
        fi
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/tmp/orchestra-pg-apt.log 2>&1; then
            echo "postgres: apt-get install postgresql failed; see /tmp/orchestra-pg-apt.log" >&2
            return 1
        fi
        installed="installed Debian postgresql, "
        bin=$(_orchestra_pg_bindir)
        if [ -z "$bin" ]; then
            echo "postgres: installed postgresql but found no initdb/pg_ctl" >&2
            return 1
        fi
    fi

    # postgres refuses to run as root: as root, run it as the postgres user (created by the Debian package)
    local run_as=()
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin postgres || return 1
        fi
        run_as=(runuser -u postgres --)
    fi

    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/orchestra-pg.XXXXXX") || return 1
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    port=$(_orchestra_free_port) || { rm -rf "$dir"; return 1; }

    if ! "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
        echo "postgres: initdb failed:" >&2; tail -n 20 "$dir/initdb.log" >&2; rm -rf "$dir"; return 1
    fi
    # the socket goes in our folder: the default /var/run/postgresql may be missing or not ours
    if ! "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >/dev/null 2>&1; then
        echo "postgres: server did not start:" >&2; tail -n 20 "$dir/server.log" >&2; rm -rf "$dir"; return 1
    fi
    _ORCHESTRA_PG_DIR=$dir
    _ORCHESTRA_PG_CTL=("${run_as[@]}" "$bin/pg_ctl")
    _orchestra_pg_add_exit_trap

    if ! "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres orchestra_test >"$dir/createdb.log" 2>&1; then
        echo "postgres: createdb failed:" >&2; cat "$dir/createdb.log" >&2; _orchestra_pg_stop; return 1
    fi
    export ORCHESTRA_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/orchestra_test"
    echo "postgres: ${installed}started a throwaway PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port in $dir (stopped and removed on exit); ORCHESTRA_TEST_PG_URL=$ORCHESTRA_TEST_PG_URL"
}

_orchestra_pg_bindir() {
    local found
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return
    fi
    # Debian keeps them off PATH; take the newest version
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$found" ] && [ -x "$found/initdb" ] && [ -x "$found/pg_ctl" ]; then
        echo "$found"
    fi
}

_orchestra_free_port() {
    local python
    python=$(command -v python3 || command -v python) || return 1
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_orchestra_pg_stop() {
    if [ -n "${_ORCHESTRA_PG_DIR:-}" ] && [ -d "$_ORCHESTRA_PG_DIR" ]; then
        "${_ORCHESTRA_PG_CTL[@]}" -D "$_ORCHESTRA_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
        rm -rf "$_ORCHESTRA_PG_DIR"
    fi
    _ORCHESTRA_PG_DIR=""
}

_orchestra_pg_add_exit_trap() {
    # keep whatever EXIT trap the sourcing script already has, and run ours first
    local previous
    eval "set -- $(trap -p EXIT)"
    previous=${3:-}
    # shellcheck disable=SC2064
    trap "_orchestra_pg_stop${previous:+; $previous}" EXIT
}

_orchestra_pg_main
