# Sourced by scripts/bench-*.sh.
# A free TCP port on 127.0.0.1 (bound with port 0, then released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
