# shellcheck shell=bash
# Sourced by dev/gpu_check.sh and dev/multi_gpu_check.sh: time limits on their parts that a signal to the script can
# end early.
#
# limit SECONDS COMMAND...: COMMAND under timeout (KILL 10 s after its TERM), started in the background and waited
# for, so that a signal to the script (an outer `timeout`, the device tool) runs its trap at once. timeout puts
# COMMAND in a process group of its own, which a signal to the script's group misses: without the trap calling
# `stop_running_part` the part kept running on the GPU after the script was gone (into the next call's work).
running_part=""
limit() {
  local status=0
  timeout -k 10 "$@" &
  running_part=$!
  wait "$running_part" || status=$?
  running_part=""
  return $status
}

# stop_running_part: TERM to the running part's timeout (which passes it on to its process group), then wait for it.
stop_running_part() {
  [ -n "$running_part" ] || return 0
  echo "stopping the running part" >&2
  kill -TERM "$running_part" 2>/dev/null
  wait "$running_part"
}
