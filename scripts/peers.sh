#!/usr/bin/env bash
# Starts and stops the peer databases for benchmarks and tests: a real influxd (Debian's influxdb 1.6) and
# victoria-metrics, each on a given loopback port with a temporary data directory, stopped by PID.
#   scripts/peers.sh start-influxd PORT DIR      -> prints the PID once /ping answers
#   scripts/peers.sh influxd-config PORT DIR [RPC_PORT] -> only writes DIR/influxdb.conf
#   scripts/peers.sh free-port                   -> prints a loopback TCP port that is free now
# influxd also binds an RPC port (backup/restore): it is chosen free too, never PORT + 1, so influxd instances of
# tests running side by side never collide.
#   scripts/peers.sh start-vm PORT DIR [LP_PORT] -> prints the PID once /health answers
#   scripts/peers.sh clickhouse-config DIR HTTP_PORT TCP_PORT INTERSERVER_PORT -> writes DIR/config.xml, users.xml
#   scripts/peers.sh start-clickhouse DIR HTTP_PORT -> prints the PID once /ping answers (config written first)
# clickhouse-server (Debian's 18.16) reads only the files written here: no /etc, data and logs under DIR.
#   scripts/peers.sh stop PID
set -euo pipefail
cmd=$1; shift
wait_http() { # url pid
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null -w '%{http_code}' "$1" | grep -q '^20'; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited" >&2; return 1; }
        sleep 0.1
    done
    echo "timeout waiting for $1" >&2; return 1
}
free_port() { # a loopback TCP port free at this moment (the kernel picks it)
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
influxd_config() { # port dir [rpc_port]: a loopback-only influxd config with everything under dir
    local port=$1 dir=$2 rpc=${3:-$(free_port)}
    mkdir -p "$dir"
    cat > "$dir/influxdb.conf" <<CONF
reporting-enabled = false
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  # No per-tag value cap (default 100,000): the memory benchmark writes up to 1,000,000 series.
  max-values-per-tag = 0
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
CONF
}
clickhouse_config() { # dir http_port tcp_port interserver_port: a private loopback clickhouse-server
    local d=$1 hp=$2 tp=$3 ip=$4
    mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/log" "$d/format_schemas"
    cat > "$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$hp</http_port>
    <tcp_port>$tp</tcp_port>
    <interserver_http_port>$ip</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>30</keep_alive_timeout>
    <max_concurrent_queries>32</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
    cat > "$d/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval><duration>3600</duration><queries>0</queries><errors>0</errors>
                <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
        </default>
    </quotas>
</yandex>
XML
}
case "$cmd" in
clickhouse-config)
    clickhouse_config "$1" "$2" "$3" "$4" ;;
start-clickhouse)
    d=$1; hp=$2
    clickhouse_config "$d" "$hp" "$(free_port)" "$(free_port)"
    /usr/sbin/clickhouse-server --config-file="$d/config.xml" > "$d/log/stdout.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$hp/ping" $pid
    echo $pid ;;
influxd-config)
    # Only writes DIR/influxdb.conf (for callers that start and stop influxd themselves, e.g. the Swift tests).
    influxd_config "$1" "$2" "${3:-}" ;;
free-port)
    free_port ;;
start-influxd)
    port=$1; dir=$2
    influxd_config "$port" "$dir"
    influxd -config "$dir/influxdb.conf" > "$dir/influxd.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$port/ping" $pid
    echo $pid ;;
start-vm)
    # Optional third argument: a port for VictoriaMetrics' line-protocol listener (TCP and UDP).
    port=$1; dir=$2; influx=${3:-}; mkdir -p "$dir"
    victoria-metrics -httpListenAddr "127.0.0.1:$port" -storageDataPath "$dir/data" -loggerLevel ERROR \
        ${influx:+-influxListenAddr "127.0.0.1:$influx"} > "$dir/vm.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$port/health" $pid
    echo $pid ;;
stop)
    pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
