# Shared by the router benchmarks (sourced): the upstream app they all proxy to and
# the pieces of nginx's proxy configuration.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# upstream_app DIR [ROUTE_LINES]: writes the upstream app into DIR: nginx answering 64
# bytes, deployed as a wharf app so that every proxy reaches the very same replica.
# Its files are named by its port, so two replicas without a private /tmp do not
# share them. ROUTE_LINES are added to its [route] table.
upstream_app() {
  mkdir -p "$1"
  cat > "$1/wharf.toml" <<TOML
app = "upstream"
[process.web]
command = "sh -c 'sed \\"s/@PORT@/\$PORT/g\\" upstream.conf.in > /tmp/upstream-\$PORT.conf && exec nginx -p /tmp -c /tmp/upstream-\$PORT.conf'"
[process.web.readiness]
tcp = true
[route]
hosts = ["upstream.localhost", "localhost"]
${2:-}
TOML
  cat > "$1/upstream.conf.in" <<'CONF'
daemon off;
worker_processes 1;
pid /tmp/upstream-@PORT@.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path /tmp; proxy_temp_path /tmp; fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp;
  server { listen 127.0.0.1:@PORT@; location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } }
}
CONF
}

# nginx_head WORK WORKERS UPSTREAM: the start of the proxy nginx's configuration, up to
# and with its `http` block's upstream `app`; the caller adds servers and the closing `}`.
nginx_head() {
  cat <<CONF
daemon off;
worker_processes $2;
# Each worker on a CPU of its own, as wharf pins its router workers.
worker_cpu_affinity auto;
pid $1/nginx.pid;
error_log $1/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  upstream app { server $3; keepalive 128; }
  # The parent id of the trace nginx starts for a request: 16 hex digits of its id.
  map \$request_id \$trace_parent { "~^(?<p>[0-9a-f]{16})" \$p; }
CONF
}

# The proxy location every nginx server of the benchmarks uses. It does the header work
# wharf's router does for every request (its contract, see CONTRACT.md and issue 4):
# X-Forwarded-For/-Proto/-Host, an X-Request-Id sent upstream and returned to the
# client, a W3C traceparent started for the request; so that the upstream and the
# load generator parse the same fields behind every proxy.
NGINX_LOCATION='location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Request-Id $request_id; proxy_set_header traceparent 00-$request_id-$trace_parent-01; add_header X-Request-Id $request_id always; }'
