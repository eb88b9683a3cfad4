set -euo pipefail
umask 077

# remote.wrap runs this step under `timeout`, which leads its own process group and TERMs it.
# A tool that ignores the TERM would outlive the step once this shell exits (timeout stops
# waiting when its child is gone), so every TERM handler first KILLs the rest of the group.
# A privileged tool runs under sudo as root, out of this group's reach: sudo relays the TERM to
# it, but a KILLed sudo leaves it running (sudo 1.9.13; its command_timeout dies with it), so each
# privileged call carries its own root-side bound, pinned in the host's sudoers rules: a root
# `timeout` (KDC, legacy VM) or rgw_admin.py's parent-death signal (RGW admin host).
# shellcheck disable=SC2317  # invoked by the traps (shellcheck cannot follow them)
reap_step() {
    local group
    local -a pids
    group=$(ps -o pgid= -p "$$" | tr -d ' ') || return 0
    [[ $group == "$PPID" ]] || return 0  # only under remote.wrap's timeout (the group's leader)
    mapfile -t pids < <(pgrep -g "$group" | grep -vxF -e "$$" -e "$PPID" || true)
    [[ ${#pids[@]} -eq 0 ]] || kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap 'reap_step; exit 143' TERM
