#!/usr/bin/env bash
# Instructions per call of one proxy at 32 concurrent unary calls, counted by
# callgrind: a figure that, unlike CPU time on a shared VM, does not move
# from run to run, for comparing two builds of the sidecar, or the sidecar
# with nghttpx.
#
#   bench/scripts/callgrind-per-call.sh <mesh-proxy binary> [bench|echo] [bench options...]
#   bench/scripts/callgrind-per-call.sh nghttpx [bench|echo] [bench options...]
#
# `bench` (the default) is the outbound proxy, `echo` the inbound one; further
# options go to meshwork-bench (`--deadline 30s`). KEEP=<dir> keeps the
# callgrind output there, for callgrind_annotate. Needs
# valgrind and a release build of meshwork-bench. A proxy runs about 50
# times slower under callgrind, so its batching differs from a real run: the
# count compares builds, it does not predict microseconds. nghttpx runs with
# --single-process (its one worker process is then the process measured) and
# one worker thread, and its calls are counted by nghttp2_submit_response.
set -euo pipefail
usage="usage: $0 <mesh-proxy binary | nghttpx> [bench|echo] [bench options...]"
target=${1:?$usage}
name=${2:-bench}
shift $(( $# < 2 ? $# : 2 ))
case "$name" in bench) side=outbound ;; echo) side=inbound ;; *) echo "$usage" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bench starts the proxies through this wrapper: the one named runs under
# callgrind, uninstrumented (nearly at full speed) until the x32 step runs.
if [ "$target" = nghttpx ]; then
  proxy=$(command -v nghttpx || echo /usr/sbin/nghttpx)
  # One worker thread: with two, the inbound under callgrind answered the
  # bench's first call with 502.
  scenario=(--scenarios nghttpx --nghttpx-bin "$work/proxy.sh" --proxy-workers 1)
  measured="*$side-error.log*"
  extra=--single-process
  per_call=nghttp2_submit_response
else
  proxy=$(realpath "$target")
  scenario=(--scenarios meshwork --mesh-bin "$work/proxy.sh")
  measured="*\" --name $name \"*"
  extra=
  per_call=send_response
fi
cat > "$work/proxy.sh" <<WRAP
#!/bin/sh
case " \$* " in
  $measured) exec valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file=$work/callgrind.out "$proxy" $extra "\$@" ;;
  *) exec "$proxy" $extra "\$@" ;;
esac
WRAP
chmod +x "$work/proxy.sh"

"$root/target/release/meshwork-bench" "${scenario[@]}" \
  --duration 5s --warmup 500ms --growth-concurrency 1 --growth-payloads 100B \
  --idle-connections 5 --idle-streams 5 --rate 100 "$@" > "$work/report.md" 2> "$work/progress" &
bench=$!
# The x32 step follows the memory steps: count 3 s from 1.5 s into it.
until grep -q "open streams" "$work/progress"; do
  kill -0 "$bench" 2>/dev/null || { tail "$work/progress"; exit 1; }
  sleep 0.2
done
sleep 1.5
pid=$(pgrep -f "callgrind-out-file=$work/callgrind.out" | head -1)
callgrind_control -i on "$pid" > /dev/null
sleep 3
callgrind_control -d "$pid" > /dev/null
callgrind_control -i off "$pid" > /dev/null
wait "$bench"

# Calls answered in the window: h2's send_response (nghttp2's
# nghttp2_submit_response) runs once per call.
python3 - "$per_call" "$work"/callgrind.out.* <<'PY'
import re, sys
names, total, cfn, calls = {}, 0, "", 0
per_call = sys.argv[1]
pattern = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")
for path in sys.argv[2:]:
    for line in open(path, errors="replace"):
        m = pattern.match(line)
        if m:
            kind, key, name = m.groups()
            if name:
                names[key] = name
            if kind == "cfn":
                cfn = names.get(key, "")
            continue
        if line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
        elif line.startswith("calls=") and per_call in cfn:
            calls += int(line.split("=")[1].split()[0])
if not calls:
    sys.exit("no calls counted")
print(f"{total / calls:,.0f} instructions per call ({calls} calls, {total:,} instructions)")
PY
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/callgrind.out.* "$KEEP"/; fi
