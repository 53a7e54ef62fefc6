#!/usr/bin/env bash
# As in the official nginx image: render $NGINX_ENVSUBST_TEMPLATE_DIR/**/*$NGINX_ENVSUBST_TEMPLATE_SUFFIX
# (default /etc/nginx/templates/*.template) into $NGINX_ENVSUBST_OUTPUT_DIR (default
# /etc/nginx/conf.d), substituting only variables that are set (optionally only those matching
# the regex $NGINX_ENVSUBST_FILTER), so nginx's own $variables survive.
set -euo pipefail

ME=$(basename "$0")

entrypoint_log() {
    if [[ -z ${NGINX_ENTRYPOINT_QUIET_LOGS:-} ]]; then
        printf '%s\n' "$*"
    fi
}

template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
filter=${NGINX_ENVSUBST_FILTER:-}

[[ -d $template_dir ]] || exit 0
if [[ ! -w $output_dir ]]; then
    entrypoint_log "$ME: ERROR: $template_dir exists, but $output_dir is not writable"
    exit 0
fi

defined_envs=
while read -r name; do
    if [[ -z $filter || $name =~ $filter ]]; then
        defined_envs+="\${$name} "
    fi
done < <(compgen -e)

while IFS= read -r -d '' template; do
    relative_path=${template#"$template_dir/"}
    output_path=$output_dir/${relative_path%"$suffix"}
    mkdir -p "$(dirname "$output_path")"
    entrypoint_log "$ME: Running envsubst on $template to $output_path"
    envsubst "$defined_envs" <"$template" >"$output_path"
done < <(find "$template_dir" -follow -type f -name "*$suffix" -print0)
