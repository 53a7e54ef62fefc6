#!/usr/bin/env bash
# Creates the local HTTPS certificate of the stack (TLS=1): DIR/tls_certificate.pem and
# DIR/tls_private_key.pem, a self-signed ECDSA P-256 certificate for localhost, 127.0.0.1 and ::1
# (the key type and lifetime of Mozilla's intermediate guideline). Made once, like the other
# secrets; made again only when it expires within RENEW_DAYS days, and Nginx reloads on its own when
# the files change. Browsers warn about it (nobody vouches for it): trust it locally, or bring a
# real certificate in production.
# usage: make-tls-cert.sh DIR
set -euo pipefail
dir="${1:?usage: make-tls-cert.sh DIR}"
readonly VALID_DAYS=90
readonly RENEW_DAYS=7
cert="$dir/tls_certificate.pem"
key="$dir/tls_private_key.pem"

if [ -s "$cert" ] && [ -s "$key" ] && openssl x509 -in "$cert" -noout -checkend $((RENEW_DAYS * 86400)) >/dev/null; then
    exit 0
fi

mkdir -p "$dir"
chmod 700 "$dir"
# Written beside the old files and moved into place, so Nginx never reads half a pair.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes \
    -days "$VALID_DAYS" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$key.new" -out "$cert.new" 2>/dev/null
# World-readable inside the private folder: Nginx reads them under its own unprivileged uid.
chmod 644 "$key.new" "$cert.new"
mv -f "$key.new" "$key"
mv -f "$cert.new" "$cert"
echo "created $cert (valid $VALID_DAYS days) and $key"
