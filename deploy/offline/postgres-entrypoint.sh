#!/usr/bin/env bash
# docker-entrypoint.sh of local/postgres:bookworm: the interface of the official postgres image's
# entrypoint (github.com/docker-library/postgres, MIT) for Debian's PostgreSQL packages.
#
#   POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE  superuser password (required unless
#                                               POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER[_FILE]       superuser name (default postgres)
#   POSTGRES_DB[_FILE]         database created at first start (default $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS[_FILE], POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD
#   PGDATA                     data directory (default /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz|*.sql.zst   run once, after initdb
#
# On first start (no $PGDATA/PG_VERSION) initdb runs as postgres, host connections get
# "host all all all scram-sha-256" (password_encryption), the database is created and the
# init scripts run against a socket-only temporary server. Then `exec postgres`.
# Started as root it drops to postgres (999:999) with setpriv; started as another user
# (`user: "999:999"`) it runs as that user (nss_wrapper if the uid has no passwd entry).
set -Eeo pipefail

# usage: file_env VAR [DEFAULT]
#    ie: file_env 'XYZ_DB_PASSWORD' 'example'
# (will allow for "$XYZ_DB_PASSWORD_FILE" to fill in the value of "$XYZ_DB_PASSWORD" from a file)
file_env() {
    local var=$1
    local fileVar=${var}_FILE
    local def=${2:-}
    if [[ -n ${!var:-} && -n ${!fileVar:-} ]]; then
        printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$fileVar"
        exit 1
    fi
    local val=$def
    if [[ -n ${!var:-} ]]; then
        val=${!var}
    elif [[ -n ${!fileVar:-} ]]; then
        val=$(<"${!fileVar}")
    fi
    export "$var"="$val"
    unset "$fileVar"
}

# check to see if this file is being run or sourced from another script
_is_sourced() {
    [[ ${#FUNCNAME[@]} -ge 2 && ${FUNCNAME[0]} == _is_sourced && ${FUNCNAME[1]} == source ]]
}

# create the data, socket and WAL directories; owned by postgres when we are root
docker_create_db_directories() {
    local user
    user=$(id -u)

    mkdir -p "$PGDATA"
    # ignore failure since there are cases where we can't chmod (and PostgreSQL might fail later anyhow)
    chmod 00700 "$PGDATA" || :

    # ignore failure since it will be fine when using the image provided directory
    mkdir -p /var/run/postgresql || :
    chmod 03775 /var/run/postgresql || :

    if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        if [[ $user == 0 ]]; then
            find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
        fi
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi

    if [[ $user == 0 ]]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    fi
}

# initialize an empty PGDATA with initdb (as the current user)
docker_init_database_dir() {
    # "initdb: could not look up effective user ID 1000: user does not exist"
    local uid gid wrapper
    uid=$(id -u)
    if ! getent passwd "$uid" &>/dev/null; then
        for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
            if [[ -s $wrapper ]]; then
                NSS_WRAPPER_PASSWD=$(mktemp)
                NSS_WRAPPER_GROUP=$(mktemp)
                export LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
                gid=$(id -g)
                printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
                printf 'postgres:x:%s:\n' "$gid" >"$NSS_WRAPPER_GROUP"
                break
            fi
        done
    fi

    if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
        set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
    fi

    # --pwfile refuses to handle a properly-empty file (hence the "\n")
    # POSTGRES_INITDB_ARGS is word-split and quote-processed on purpose, as upstream does.
    # shellcheck disable=SC2016
    eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"' "$@"'

    # unset/cleanup "nss_wrapper" bits
    if [[ ${LD_PRELOAD:-} == */libnss_wrapper.so ]]; then
        rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
        unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    fi
}

# refuse to initialize without a password unless trust was asked for explicitly
docker_verify_minimum_env() {
    if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
        cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.

		EOE
        exit 1
    fi
    if [[ $POSTGRES_HOST_AUTH_METHOD == trust ]]; then
        cat >&2 <<-'EOWARN'
			********************************************************************************
			WARNING: POSTGRES_HOST_AUTH_METHOD has been set to "trust". This will allow
			         anyone with access to the Postgres port to access your database without
			         a password, even if POSTGRES_PASSWORD is set.
			********************************************************************************
		EOWARN
    fi
}

# run the init scripts (*.sh executed or sourced, *.sql[.gz|.xz|.zst] through psql)
docker_process_init_files() {
    local f
    printf '\n'
    for f; do
        case $f in
            *.sh)
                if [[ -x $f ]]; then
                    printf '%s: running %s\n' "$0" "$f"
                    "$f"
                else
                    printf '%s: sourcing %s\n' "$0" "$f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql)
                printf '%s: running %s\n' "$0" "$f"
                docker_process_sql -f "$f"
                printf '\n'
                ;;
            *.sql.gz)
                printf '%s: running %s\n' "$0" "$f"
                gunzip -c "$f" | docker_process_sql
                printf '\n'
                ;;
            *.sql.xz)
                printf '%s: running %s\n' "$0" "$f"
                xzcat "$f" | docker_process_sql
                printf '\n'
                ;;
            *.sql.zst)
                printf '%s: running %s\n' "$0" "$f"
                zstd -dc "$f" | docker_process_sql
                printf '\n'
                ;;
            *) printf '%s: ignoring %s\n' "$0" "$f" ;;
        esac
        printf '\n'
    done
}

# psql against the temporary (socket-only) server, as the superuser, into POSTGRES_DB
docker_process_sql() {
    local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [[ -n $POSTGRES_DB ]]; then
        query_runner+=(--dbname "$POSTGRES_DB")
    fi
    PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

# create POSTGRES_DB unless it exists (the superuser itself was created by initdb)
docker_setup_db() {
    local db=$POSTGRES_DB dbAlreadyExists
    dbAlreadyExists=$(
        POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" --tuples-only <<-'EOSQL'
			SELECT 1 FROM pg_database WHERE datname = :'db' ;
		EOSQL
    )
    if [[ -z $dbAlreadyExists ]]; then
        POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
        printf '\n'
    fi
}

# load the environment (with the _FILE variants) and see whether PGDATA is initialized
docker_setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"

    declare -g DATABASE_ALREADY_EXISTS=
    # look specifically for PG_VERSION, as it is expected in the DB dir
    if [[ -s $PGDATA/PG_VERSION ]]; then
        DATABASE_ALREADY_EXISTS=true
    fi
}

# append "host all all all <method>" to pg_hba.conf (default method: password_encryption)
pg_setup_hba_conf() {
    # default authentication method is md5 on versions before 14
    # https://www.postgresql.org/about/news/postgresql-14-released-2318/
    if [[ ${1:-} == postgres ]]; then
        shift
    fi
    local auth
    # check the default/configured encryption and use that as the auth method
    auth=$(postgres -C password_encryption "$@")
    : "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
    {
        printf '\n'
        if [[ $POSTGRES_HOST_AUTH_METHOD == trust ]]; then
            printf '# warning trust is enabled for all connections\n'
            printf '# see https://www.postgresql.org/docs/%s/auth-trust.html\n' "$PG_MAJOR"
        fi
        printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
    } >>"$PGDATA/pg_hba.conf"
}

# start a socket-only server for the init scripts
docker_temp_server_start() {
    if [[ ${1:-} == postgres ]]; then
        shift
    fi
    # internal start of server in order to allow setup using psql client
    # does not listen on external TCP/IP and waits until start finishes
    set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
    PGUSER=${PGUSER:-$POSTGRES_USER} \
        pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
    PGUSER=${PGUSER:-postgres} \
        pg_ctl -D "$PGDATA" -m fast -w stop
}

# check arguments for an option that would cause postgres to stop
# return true if there is one
_pg_want_help() {
    local arg
    for arg; do
        case $arg in
            # postgres --help | grep 'then exit'
            -'?' | --help | --describe-config | -V | --version)
                return 0
                ;;
        esac
    done
    return 1
}

_main() {
    # if first arg looks like a flag, assume we want to run postgres server
    if [[ ${1:0:1} == - ]]; then
        set -- postgres "$@"
    fi

    if [[ $1 == postgres ]] && ! _pg_want_help "$@"; then
        docker_setup_env
        # setup data directories and permissions (when run as root)
        docker_create_db_directories
        if [[ $(id -u) == 0 ]]; then
            # then restart script as postgres user
            exec setpriv --reuid=postgres --regid=postgres --init-groups \
                env HOME=/var/lib/postgresql "${BASH_SOURCE[0]}" "$@"
        fi

        # only run initialization on an empty data directory
        if [[ -z $DATABASE_ALREADY_EXISTS ]]; then
            docker_verify_minimum_env

            # check dir permissions to reduce likelihood of half-initialized database
            ls /docker-entrypoint-initdb.d/ >/dev/null

            docker_init_database_dir
            pg_setup_hba_conf "$@"

            # PGPASSWORD is required for psql when authentication is required for 'local' connections via pg_hba.conf and is otherwise harmless
            # e.g. when '--auth=md5' or '--auth-local=md5' is used in POSTGRES_INITDB_ARGS
            export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
            docker_temp_server_start "$@"

            docker_setup_db
            local -a init_files
            shopt -s nullglob
            init_files=(/docker-entrypoint-initdb.d/*)
            shopt -u nullglob
            docker_process_init_files "${init_files[@]}"

            docker_temp_server_stop
            unset PGPASSWORD

            printf '\nPostgreSQL init process complete; ready for start up.\n\n'
        else
            printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
        fi
    fi

    exec "$@"
}

if ! _is_sourced; then
    _main "$@"
fi
