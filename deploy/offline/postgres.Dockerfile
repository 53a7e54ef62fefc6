# Stand-in for postgres:17, built from Debian packages (deploy/offline/README.md).
# Debian bookworm ships PostgreSQL 15; the entrypoint mimics the official image's.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

ARG PG_MAJOR=15
ENV PG_MAJOR=${PG_MAJOR} \
    LANG=C.UTF-8 \
    PGDATA=/var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}

# User postgres uid/gid 999 as in the official image, created before the packages; no
# cluster is created at install time (initdb runs in the entrypoint, into $PGDATA). xz-utils
# and zstd, as in the official image, for compressed /docker-entrypoint-initdb.d scripts.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
        --shell /bin/bash --comment "PostgreSQL administrator" postgres \
    && install -d -o postgres -g postgres -m 0755 /var/lib/postgresql \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/docker.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        libnss-wrapper \
        "postgresql-${PG_MAJOR}" \
        xz-utils \
        zstd \
    && rm -rf /var/lib/apt/lists/* \
    && test -z "$(ls -A /etc/postgresql)" \
    && test "$(id -u postgres):$(id -g postgres)" = 999:999 \
    && sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" \
        "/usr/share/postgresql/${PG_MAJOR}/postgresql.conf.sample" \
    && grep -F "listen_addresses = '*'" "/usr/share/postgresql/${PG_MAJOR}/postgresql.conf.sample" \
    && install -d -o postgres -g postgres -m 3777 /var/run/postgresql \
    && install -d -o postgres -g postgres -m 1777 "$PGDATA" \
    && mkdir /docker-entrypoint-initdb.d \
    && postgres --version && initdb --version && pg_ctl --version && pg_isready --version && psql --version

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN ln -s usr/local/bin/docker-entrypoint.sh /docker-entrypoint.sh

VOLUME /var/lib/postgresql/data

ENTRYPOINT ["docker-entrypoint.sh"]
# Like the official image: SIGINT is PostgreSQL's "fast" shutdown (SIGTERM is "smart", which
# waits for every client to disconnect).
STOPSIGNAL SIGINT
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["pg_isready", "-h", "127.0.0.1", "-q"]
CMD ["postgres"]
