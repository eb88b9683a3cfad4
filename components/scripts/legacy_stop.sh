#!/bin/bash
# shellcheck shell=bash
# Downtime starts here: the runbook's `sudo puppet agent --disable "..."` and
# `sudo systemctl stop airflow-{webserver,kerberos,scheduler}@*.service` on the legacy Airflow VM,
# narrowed to this instance's units, idempotent.  The script runs as the SSH user; only the calls
# through `privileged` run as root, each one exact rule of log_migration.sudoers_rules (README).
#
# Filled in by the program (components/log_migration.py stop_legacy_script):
#   instance          the Kubernetes instance (messages)
#   legacy_name       the legacy instance's name on the VM (puppet's airflow::instance title)
#   units             its units, exactly: airflow-{webserver,kerberos,scheduler}@<legacy_name>.service
#   scheduler_unit    the one that must exist (a wrong legacy_name fails here, before anything changes)
#   reason            puppet's disable message (the runbook's)
#   run_wait_seconds  how long a puppet run in progress may take to end
#   tool_seconds      the step's own time limit: bound of each privileged call (and sudo's command_timeout)
#   puppet, systemctl, timeout    absolute paths of the tools (sudo's secure_path and the SSH PATH differ)
#   sudo              (sudo -n) when the stack says remoteSudo, () when the SSH user is root

fail() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }
for tool in "$puppet" "$systemctl" "$timeout"; do
    [[ -x $tool ]] || fail "$tool is not installed (or not executable)"
done

# a run killed with SIGKILL cannot run its EXIT trap: remove the scratch dirs (puppet's lock
# paths, nothing secret) of earlier runs whose process is gone, then make this run's
for old in "${TMPDIR:-/tmp}"/airflow-legacy-stop.*; do
    [[ -d $old && ! -L $old && -O $old && -f $old/pid ]] || continue
    old_pid=
    IFS= read -r old_pid < "$old/pid" || true
    if [[ $old_pid =~ ^[0-9]+$ && ! -e /proc/$old_pid ]]; then rm -rf -- "$old"; fi
done
scratch=$(mktemp -d "${TMPDIR:-/tmp}/airflow-legacy-stop.XXXXXXXX")
trap 'rm -rf -- "$scratch"' EXIT
printf '%s\n' "$$" > "$scratch/pid"

# A privileged tool runs as root under `timeout`, itself run by sudo: the step cannot signal root
# processes, sudo relays a TERM only to the process it started, and sudo's command_timeout ends
# only that process.  GNU timeout leads its own process group: on a TERM (relayed by sudo) or at
# tool_seconds it TERMs the tool's whole group and KILLs it 1 s later, so nothing the tool
# started survives.  The call runs in the background so that this shell's TERM handler runs at
# once; the handler waits for it to end (it never KILLs sudo: a root tool without its sudo
# would be bounded by nothing but its own timeout).
tool_pid=
# shellcheck disable=SC2317  # invoked by the trap
on_term() {
    # ignored, not reset: GNU timeout sends its TERM to this shell and to its group, and a second
    # TERM arriving with the default action would end this handler before the tool has ended
    trap '' TERM
    if [[ -n $tool_pid ]]; then
        printf '%s: interrupted; waiting for the privileged call to end (at most 1 s)\n' "$0" >&2
        kill -TERM "$tool_pid" 2>/dev/null || true
        wait "$tool_pid" 2>/dev/null || true
    fi
    reap_step
    exit 143
}
trap on_term TERM

# privileged OUT TOOL ARG...: one exact sudoers rule; stdout into the file OUT ("-": stderr, the log)
privileged() {
    local out=$1 rc=0
    shift
    if [[ $out == - ]]; then
        "${sudo[@]}" "$timeout" --kill-after=1s "${tool_seconds}s" "$@" </dev/null >&2 &
    else
        "${sudo[@]}" "$timeout" --kill-after=1s "${tool_seconds}s" "$@" </dev/null >"$out" &
    fi
    tool_pid=$!
    wait "$tool_pid" || rc=$?
    tool_pid=
    return "$rc"
}

# lock_path VAR NAME: VAR = puppet's setting NAME, a lock file path.  The lock files are in puppet's
# statedir, mode 01755 by puppet's own default: the SSH user sees them without sudo (only their
# paths need root: a non-root puppet reads a per-user config)
lock_path() {
    local path=
    privileged "$scratch/$2" "$puppet" config print "$2" || fail "puppet config print $2 failed (as root)"
    IFS= read -r path < "$scratch/$2" || true
    [[ $path == /* ]] || fail "puppet config print $2 printed no absolute path: '$path'"
    [[ -d ${path%/*} && -x ${path%/*} ]] ||
        fail "cannot tell whether $path exists: ${path%/*} is not a directory ${USER:-uid $EUID} can search (puppet makes its statedir 01755)"
    printf -v "$1" '%s' "$path"
}

# 0. the instance's units are known to systemd: a wrong legacy name stops here, before puppet is touched
load_state=$("$systemctl" show --property=LoadState --value "$scheduler_unit" </dev/null) ||
    fail "systemctl show $scheduler_unit failed"
[[ $load_state == loaded ]] ||
    fail "systemd has no unit $scheduler_unit (LoadState=$load_state): is '$legacy_name' the legacy instance's name? (from legacy.logsDir)"

disabled_lock=''
run_lock=''

# 1. puppet must not start the services again.  Already disabled (by us, or by someone else
#    with another reason, which stays as it is) is fine.
lock_path disabled_lock agent_disabled_lockfile
if [[ -e $disabled_lock ]]; then
    puppet_state="puppet agent was already disabled"
else
    privileged - "$puppet" agent --disable "$reason" || fail "puppet agent --disable failed"
    [[ -e $disabled_lock ]] || fail "puppet agent --disable did not create $disabled_lock"
    puppet_state="puppet agent disabled"
fi

# 2. a puppet run already in progress may still (re)start a service: wait for it to end
lock_path run_lock agent_catalog_run_lockfile
waited=0
while [[ -e $run_lock ]]; do
    [[ -r $run_lock ]] || fail "cannot read $run_lock (the pid of a puppet run in progress) as ${USER:-uid $EUID}"
    run_pid=
    IFS= read -r run_pid < "$run_lock" 2>/dev/null || true
    if [[ ! $run_pid =~ ^[0-9]+$ || ! -e /proc/$run_pid ]]; then
        break  # a stale lock of a dead run, or the run ended as we read
    fi
    if [[ $waited -ge $run_wait_seconds ]]; then
        fail "a puppet agent run (pid $run_pid) is still in progress after ${run_wait_seconds}s; stop it, then re-run"
    fi
    if [[ $waited -eq 0 ]]; then
        printf '%s: waiting for the puppet agent run in progress (pid %s)\n' "$0" "$run_pid" >&2
    fi
    sleep 1
    waited=$((waited + 1))
done

# 3. stop the instance's services that run (listing needs no privilege; each stop is one rule)
active_units() {
    local unit rest
    "$systemctl" list-units --state=active,activating,deactivating,reloading --no-legend --plain --full "${units[@]}" </dev/null |
        while read -r unit rest; do
            [[ -n $unit ]] && printf '%s ' "$unit"
        done
}
before=$(active_units) || fail "systemctl list-units failed"
for unit in "${units[@]}"; do
    if [[ " $before" == *" $unit "* ]]; then
        privileged - "$systemctl" stop "$unit" || fail "systemctl stop $unit failed"
    fi
done
after=$(active_units) || fail "systemctl list-units failed"
[[ -z $after ]] || fail "still active after systemctl stop: $after"

if [[ -n $before ]]; then
    printf '%s: %s downtime started: the legacy services of airflow-%s are stopped (%s)\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$instance" "${before% }" >&2
    printf 'airflow-%s legacy services: %s; stopped %s\n' "$instance" "$puppet_state" "${before% }"
else
    printf '%s: %s downtime started earlier: no legacy service of airflow-%s was running\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$instance" >&2
    printf 'airflow-%s legacy services: %s; none was running\n' "$instance" "$puppet_state"
fi
