# Stand-in for nginx:1.28, built from Debian packages (deploy/offline/README.md).
# Debian bookworm ships nginx 1.22; nginx.conf here mirrors the official image's.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

# User nginx uid/gid 101 as in the official image; nginx.conf runs the workers as it, and the
# temp directories are its own so `user: "101:101"` works too.
# hadolint ignore=DL3008
RUN groupadd --system --gid 101 nginx \
    && useradd --system --uid 101 --gid nginx --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "nginx user" nginx \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        gettext-base \
        nginx \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/nginx/sites-enabled/default /etc/nginx/sites-available/default \
    && mkdir -p /etc/nginx/conf.d /usr/share/nginx/html \
    && install -d -o nginx -g nginx -m 0700 \
        /var/lib/nginx/body /var/lib/nginx/proxy /var/lib/nginx/fastcgi /var/lib/nginx/uwsgi /var/lib/nginx/scgi \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && nginx -v

COPY nginx.conf /etc/nginx/nginx.conf
COPY nginx-entrypoint.sh /docker-entrypoint.sh
COPY nginx-20-envsubst-on-templates.sh /docker-entrypoint.d/20-envsubst-on-templates.sh

ENTRYPOINT ["/docker-entrypoint.sh"]

EXPOSE 80
STOPSIGNAL SIGQUIT
# What answers depends on the site config mounted at run time; compose.yaml defines the check.
HEALTHCHECK NONE
CMD ["nginx", "-g", "daemon off;"]
