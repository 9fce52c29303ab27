#!/usr/bin/env bash
# Runs every test tier as two pytest sessions side by side (what `make test` runs).
#
# Why: run one after the other the tiers take about 19 minutes here; most of the emulator
# tier's time is waiting on the operator's timers, and the pure core needs CPU only for a
# couple of minutes. So:
#   - "timed" (in the foreground, its progress on the terminal): the tiers that measure time
#     with real processes and real traffic (server, local runtime, control plane, a real
#     Prometheus scraping real servers) or build something once per session (the image, the
#     control plane); they never run side by side with each other.
#   - "core + emulator" (in the background, its report printed when both are done, its log in
#     .pytest-core-emulator.log): the pure core, then the emulator tier.
# pytest-xdist's `--dist loadgroup` would do this, but with pytest 9 it ignores the groups
# (it renames node ids through an attribute pytest no longer reads).
#
# Arguments are passed to both sessions (e.g. `-x`, `-k rollout`). To run some tests only:
# .venv/bin/python -m pytest tests/unit/test_rollout.py
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PY:-.venv/bin/python}
core_emulator=(tests/unit tests/emulator)
timed=(tests/chart tests/cluster tests/container tests/controlplane tests/local tests/prometheus tests/server)
log=.pytest-core-emulator.log

# Every folder with tests belongs to exactly one session: a new tier cannot be forgotten.
for dir in tests/*/; do
  dir=${dir%/}
  compgen -G "$dir/test_*.py" >/dev/null || continue
  case " ${core_emulator[*]} ${timed[*]} " in
    *" $dir "*) ;;
    *) echo "hack/test-tiers.sh: $dir is in neither session; add it to one" >&2; exit 2 ;;
  esac
done

echo "[tests] ${core_emulator[*]} run in the background (report at the end; log: $log)"
"$PY" -m pytest "${core_emulator[@]}" "$@" >"$log" 2>&1 &
background=$!
trap 'kill "$background" 2>/dev/null' INT TERM

"$PY" -m pytest "${timed[@]}" "$@"
timed_status=$?

if kill -0 "$background" 2>/dev/null; then
  echo "[tests] waiting for ${core_emulator[*]} (log: $log)"
fi
wait "$background"
background_status=$?
echo
echo "================ ${core_emulator[*]} (log: $log) ================"
cat "$log"
echo
echo "[tests] ${timed[*]}: exit $timed_status; ${core_emulator[*]}: exit $background_status"
if [ "$timed_status" -ne 0 ]; then exit "$timed_status"; fi
exit "$background_status"
