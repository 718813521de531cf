#!/usr/bin/env bash
# Instructions per call of one Meshwork sidecar at 32 concurrent unary calls,
# counted by callgrind: a figure that, unlike CPU time on a shared VM, does not
# move from run to run, for comparing two builds of the sidecar.
#
#   bench/scripts/callgrind-per-call.sh <mesh-proxy binary> [bench|echo] [bench options...]
#
# `bench` (the default) is the outbound sidecar, `echo` the inbound one; further
# options go to meshwork-bench (`--deadline 30s`). KEEP=<dir> keeps the
# callgrind output there, for callgrind_annotate. Needs
# valgrind and a release build of meshwork-bench. The sidecar runs about 50
# times slower under callgrind, so its batching differs from a real run: the
# count compares builds, it does not predict microseconds.
set -euo pipefail
proxy=$(realpath "${1:?usage: $0 <mesh-proxy binary> [bench|echo]}")
name=${2:-bench}
shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bench starts sidecars through this wrapper: the one named runs under
# callgrind, uninstrumented (nearly at full speed) until the x32 step runs.
cat > "$work/proxy.sh" <<WRAP
#!/bin/sh
case " \$* " in
  *" --name $name "*) exec valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file=$work/callgrind.out "$proxy" "\$@" ;;
  *) exec "$proxy" "\$@" ;;
esac
WRAP
chmod +x "$work/proxy.sh"

"$root/target/release/meshwork-bench" --mesh-bin "$work/proxy.sh" --scenarios meshwork \
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

# Calls answered in the window: h2's send_response runs once per call.
python3 - "$work"/callgrind.out.* <<'PY'
import re, sys
names, total, cfn, calls = {}, 0, "", 0
pattern = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")
for path in sys.argv[1:]:
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
        elif line.startswith("calls=") and "send_response" in cfn:
            calls += int(line.split("=")[1].split()[0])
if not calls:
    sys.exit("no calls counted")
print(f"{total / calls:,.0f} instructions per call ({calls} calls, {total:,} instructions)")
PY
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/callgrind.out.* "$KEEP"/; fi
