#!/bin/sh
# nginx as a plain keep-alive reverse proxy, for `lectr bench --peer`:
#   lectr bench --peer 'nginx=lectr/bench/peers/nginx.sh {upstream} 9100@9100'
# Needs nginx on the PATH (Debian: apt-get install nginx-light). Usage: nginx.sh UPSTREAM_URL PORT
set -eu
upstream=$(echo "$1" | sed -e 's#^http://##' -e 's#/.*$##')
dir=$(mktemp -d "${TMPDIR:-/tmp}/lectr-bench-nginx-XXXXXX")
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream provider { server $upstream; keepalive 256; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$2;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    location / {
      proxy_pass http://provider;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
exec nginx -c "$dir/nginx.conf" -p "$dir"
