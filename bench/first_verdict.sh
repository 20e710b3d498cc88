#!/usr/bin/env bash
# Time from a fresh clone to the first verdict `make run` prints, and the venv's size.
#
#   bench/first_verdict.sh warm    # pip's cache and the project's caches as this machine has them
#   bench/first_verdict.sh cold    # pip's and uv's caches off, and empty model, Kafka-jar and Maven caches
#
# It clones HEAD of this repository into a temporary folder (nothing uncommitted travels), runs
# `make run` there on a free broker port, timestamps every line it prints, and reports:
#   first_verdict_s  seconds from `make run` to the first verdict line
#   total_s          seconds to the end of `make run`
#   venv_mb          the new venv's size
# Run it alone: on 2 cores a second CPU-heavy job distorts every figure.
set -euo pipefail

mode=${1:?usage: first_verdict.sh warm|cold}
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/rationanomaly-ttfv-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

git clone -q "$repo" "$tmp/clone"
port=$(python3.11 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env_args=()
if [ "$mode" = cold ]; then
    env_args+=(PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 RATIONANOMALY_MODEL_CACHE="$tmp/models" RATIONANOMALY_KAFKA_LIBS="$tmp/kafka-libs"
               MAVEN_OPTS="-Dmaven.repo.local=$tmp/m2")
elif [ "$mode" != warm ]; then
    echo "first_verdict: mode is warm or cold, not '$mode'" >&2
    exit 2
fi
# The shared data sits beside the repository; the clone gets it through the environment.
export RATIONANOMALY_DATA_DIR="${RATIONANOMALY_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data}"

start=$(date +%s.%N)
first=""
status=0
while IFS= read -r line; do
    if [[ "$line" =~ ^__status=([0-9]+)$ ]]; then status=${BASH_REMATCH[1]}; continue; fi
    now=$(date +%s.%N)
    printf '%6.1f  %s\n' "$(echo "$now - $start" | bc)" "$line"
    # The demo prints one line per verdict: "  normal    blk_… lines=… id=…".
    if [ -z "$first" ] && [[ "$line" =~ ^\ +(normal|abnormal|unknown)\ +[^\ ]+\ +lines= ]]; then first=$now; fi
done < <(cd "$tmp/clone" && env "${env_args[@]}" make --no-print-directory run KAFKA_PORT="$port" 2>&1 \
         && echo "__status=0" || echo "__status=$?")
end=$(date +%s.%N)
venv_mb=$(du -sm "$tmp/clone/.venv" | cut -f1)
printf 'first_verdict: mode=%s exit=%s first_verdict_s=%s total_s=%.1f venv_mb=%s\n' "$mode" "$status" \
    "$( [ -n "$first" ] && printf '%.1f' "$(echo "$first - $start" | bc)" || echo none)" \
    "$(echo "$end - $start" | bc)" "$venv_mb"
exit "$status"
