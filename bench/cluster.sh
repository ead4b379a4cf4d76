# The `cluster` scenario of bench/run (issue 9, "Benchmarks"); sourced by
# bench/run, which provides BIN, LOAD, RESULTS and REPS.
#
# Every run gets a fresh cluster: its own redis-server (from PATH, nothing
# on disk: --save '' --appendonly no) and CLUSTER_NODES example servers
# joined to it with --redis, all on loopback; or, for the comparisons, one
# example server without Redis ("standalone"). Runs, per repetition:
#   cluster-send/rate           cross-node `direct` sends, node 1 -> node 2,
#                               at a fixed total rate: one-way latency
#   cluster-send/max            the same as fast as possible (a window of
#                               messages in flight per pair): throughput
#   cluster-fanout/spread       one room, members round-robin over all nodes,
#                               the publisher on node 1
#   cluster-fanout/one-node     the same room, every member on node 1
#   cluster-fanout/standalone   the same room on a server without Redis
#   cluster-connect/clustered   handshakes on node 1 (JWT + claim script)
#   cluster-connect/standalone  handshakes on a server without Redis
# The placements (and the two connect runs) alternate their order on every
# other repetition. The load tool reads the CPU time of every server and of
# Redis over the measured phase (--cpu-pid ROLE=PID, /proc/PID/stat). Each
# run keeps its servers' logs (NAME.nodeI.log, NAME.redis.log) and the
# number of times a node declared Redis down (NAME.down), which the report
# shows: Redis is healthy here, so any such event is a node falling behind.
# Settings: the --cluster-* flags of bench/run (see cluster_usage).

CLUSTER_NODES=3
CLUSTER_PAIRS=100
CLUSTER_RATE=10000
CLUSTER_WINDOW=16
CLUSTER_DURATION=5s
CLUSTER_MEMBERS=10000
CLUSTER_MESSAGES=300
CLUSTER_CONNS=5000
CLUSTER_REDIS_PORT=18379
CLUSTER_BASE_PORT=18091
# Joins in flight in the fan-out runs (the load tool's default, 256, made
# node 1 declare Redis down during the 10,000-member join storm).
CLUSTER_JOIN_CONCURRENCY=64
CLUSTER_PIDS=()
REDIS_PID=""
CLUSTER_RUN=cluster

cluster_usage() {
  echo "cluster flags: --cluster-nodes N (2-9, default $CLUSTER_NODES) --cluster-pairs N --cluster-rate MSGS_PER_S"
  echo "  --cluster-window N --cluster-duration 5s --cluster-members N --cluster-messages N --cluster-conns N"
  echo "  --cluster-redis-port P (default $CLUSTER_REDIS_PORT) --cluster-base-port P (nodes on P, P+1, ...; default $CLUSTER_BASE_PORT)"
}

cluster_flag() { # flag value
  case $1 in
    --cluster-nodes) CLUSTER_NODES=$2;;
    --cluster-pairs) CLUSTER_PAIRS=$2;;
    --cluster-rate) CLUSTER_RATE=$2;;
    --cluster-window) CLUSTER_WINDOW=$2;;
    --cluster-duration) CLUSTER_DURATION=$2;;
    --cluster-members) CLUSTER_MEMBERS=$2;;
    --cluster-messages) CLUSTER_MESSAGES=$2;;
    --cluster-conns) CLUSTER_CONNS=$2;;
    --cluster-redis-port) CLUSTER_REDIS_PORT=$2;;
    --cluster-base-port) CLUSTER_BASE_PORT=$2;;
    *) echo "unknown flag $1" >&2; cluster_usage >&2; return 2;;
  esac
}

cluster_check() {
  case $CLUSTER_NODES in [2-9]) ;; *) echo "--cluster-nodes must be 2 to 9" >&2; return 2;; esac
  command -v redis-server >/dev/null \
    || { echo "the cluster scenario needs redis-server on PATH (Debian: apt-get install redis-server), or leave it out of --scenarios" >&2; return 2; }
  redis-server --version >"$RESULTS/redis-version.txt"
  echo "nodes=$CLUSTER_NODES" >"$RESULTS/cluster-settings.txt"
}

cluster_url() { # node index from 1
  echo "ws://127.0.0.1:$((CLUSTER_BASE_PORT + $1 - 1))/ws"
}

cluster_busy() { # port: something accepts on it
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cluster_wait() { # port what log
  for _ in $(seq 1 200); do
    cluster_busy "$1" && return 0
    sleep 0.05
  done
  echo "$2 did not start on port $1; log:" >&2; cat "$3" >&2; return 1
}

cluster_redis_ready() { # a PONG from Redis (accepting is not yet serving)
  local reply=""
  for _ in $(seq 1 200); do
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$CLUSTER_REDIS_PORT" && printf 'PING\r\n' >&3 \
      && IFS= read -r -t 1 line <&3 && echo "$line") 2>/dev/null || true)
    case $reply in +PONG*) return 0;; esac
    sleep 0.05
  done
  echo "redis-server did not answer PING; log:" >&2; cat "$RESULTS/$CLUSTER_RUN.redis.log" >&2; return 1
}

cluster_start() { # "clustered" (Redis + CLUSTER_NODES nodes) | "standalone" (one server, no Redis)
  local n=1 redis=()
  for p in $(seq "$CLUSTER_BASE_PORT" $((CLUSTER_BASE_PORT + CLUSTER_NODES - 1))) "$CLUSTER_REDIS_PORT"; do
    if cluster_busy "$p"; then echo "port $p is in use (see --cluster-base-port, --cluster-redis-port)" >&2; return 1; fi
  done
  if [ "$1" = clustered ]; then
    n=$CLUSTER_NODES
    redis-server --port "$CLUSTER_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
      --loglevel warning >"$RESULTS/$CLUSTER_RUN.redis.log" 2>&1 &
    REDIS_PID=$!
    cluster_redis_ready
    redis=(--redis "redis://127.0.0.1:$CLUSTER_REDIS_PORT")
  fi
  for i in $(seq 1 "$n"); do
    local port=$((CLUSTER_BASE_PORT + i - 1))
    EDK_WS_NODE_ID=bench-n$i RUST_LOG=warn "$BIN/server" --addr "127.0.0.1:$port" "${redis[@]}" \
      >"$RESULTS/$CLUSTER_RUN.node$i.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
  done
  for i in $(seq 1 "$n"); do
    cluster_wait $((CLUSTER_BASE_PORT + i - 1)) "node $i" "$RESULTS/$CLUSTER_RUN.node$i.log"
  done
}

cluster_stop() { # SIGKILL, like stop_server: nothing lingers on the ports
  local p
  if [ ${#CLUSTER_PIDS[@]} -gt 0 ]; then
    cat "$RESULTS/$CLUSTER_RUN".node*.log 2>/dev/null | grep -c 'backplane (Redis) down' >"$RESULTS/$CLUSTER_RUN.down" || true
  fi
  for p in "${CLUSTER_PIDS[@]}" $REDIS_PID; do
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  CLUSTER_PIDS=()
  REDIS_PID=""
}

cluster_load() { # scenario label rep url load-args...
  local s=$1 label=$2 r=$3 url=$4 cpu=() p
  shift 4
  for p in "${CLUSTER_PIDS[@]}"; do cpu+=(--cpu-pid "server=$p"); done
  if [ -n "$REDIS_PID" ]; then cpu+=(--cpu-pid "redis=$REDIS_PID"); fi
  local name="cluster-$s-$label-$r"
  local cmd=("$LOAD" --quiet --label "$label" --url "$url" --json "$RESULTS/$name.json" "${cpu[@]}" "$@")
  echo "${cmd[*]}" >"$RESULTS/$name.cmd"
  echo "== cluster-$s / $label / run $r" >&2
  "${cmd[@]}" >"$RESULTS/$name.txt" 2>&1 || echo "   failed: $(tail -2 "$RESULTS/$name.txt")" >&2
}

cluster_once() { # mode scenario label rep url load-args...: one run on a fresh cluster
  local mode=$1
  shift
  CLUSTER_RUN="cluster-$1-$2-$3"
  cluster_start "$mode"
  cluster_load "$@"
  cluster_stop
}

run_cluster() {
  local r all="" i
  for i in $(seq 1 "$CLUSTER_NODES"); do all="$all${all:+,}$(cluster_url "$i")"; done
  local one; one=$(cluster_url 1)
  local send=(cross --peer-url "$(cluster_url 2)" --pairs "$CLUSTER_PAIRS" --duration "$CLUSTER_DURATION")
  local fan=(--connect-concurrency "$CLUSTER_JOIN_CONCURRENCY" fanout --members "$CLUSTER_MEMBERS" --rate 0 --messages "$CLUSTER_MESSAGES")
  local conn=(connect --conns "$CLUSTER_CONNS")
  for r in $(seq 1 "$REPS"); do
    cluster_once clustered send rate "$r" "$one" "${send[@]}" --rate "$CLUSTER_RATE"
    cluster_once clustered send max "$r" "$one" "${send[@]}" --rate 0 --window "$CLUSTER_WINDOW"
    local placements="spread one-node standalone" servers="clustered standalone"
    if [ $((r % 2)) = 0 ]; then placements="standalone one-node spread"; servers="standalone clustered"; fi
    for p in $placements; do
      case $p in
        spread) cluster_once clustered fanout spread "$r" "$one" "${fan[@]}" --member-urls "$all";;
        one-node) cluster_once clustered fanout one-node "$r" "$one" "${fan[@]}";;
        standalone) cluster_once standalone fanout standalone "$r" "$one" "${fan[@]}";;
      esac
    done
    for p in $servers; do
      cluster_once "$p" connect "$p" "$r" "$one" "${conn[@]}"
    done
  done
}
