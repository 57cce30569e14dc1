# Sourced by scripts/bench-*.sh.
# A free TCP port on 127.0.0.1 (bound with port 0, then released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Waits (at most 10 s) until the HTTP server on 127.0.0.1:PORT answers /ping.
wait_ping() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/ping" && return 0; sleep 0.1; done; return 1; }
