#!/bin/bash
# shellcheck shell=bash
# The log steps on the legacy Airflow VM: the sync (first pass, and the final pass during the
# downtime) and the verification, run as the SSH user WITHOUT sudo, as the runbook's operator reads
# the tree (`cd /srv/airflow-<instance>/logs; s3cmd sync ...`).  One body for both steps, so the
# key handling below exists once.
#
# Filled in by the program (components/log_migration.py sync_script / verify_script):
#   step                 sync | verify
#   logs_dir             the legacy logs directory (legacy.logsDir)
#   bucket, s3_host, use_https, region, ca_file
#                        the target bucket and the RGW (s3cmd's host_base, use_https, bucket_location, ca_certs_file)
#   parallelism, progress_seconds, multipart_threshold, final_pass
#                        the sync's tunables (the verify step carries them unused)
#   log_sync_py          components/scripts/log_sync.py, run with `python3 -` (the code on its stdin)
# No sudo array: these steps ask sudo for nothing (remote.script gives it only to a body that uses it).
# stdin: the access key and the secret key of the instance's RGW user, one a line.

fail() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }
script_name=$0  # the helper's messages carry the step's name too
export script_name
[[ $step == sync || $step == verify ]] || fail "unknown step '$step'"

[[ -d $logs_dir ]] || fail "the logs directory $logs_dir does not exist or is not a directory (or a directory above it is not searchable by ${USER:-uid $EUID})"
command -v s3cmd >/dev/null || fail "s3cmd is not installed (apt-get install s3cmd)"
command -v python3 >/dev/null || fail "python3 is not installed"
if [[ -n $ca_file && ! -r $ca_file ]]; then fail "CA file $ca_file is not readable"; fi

# the keys arrive on stdin, two lines: access key, then secret key (never argv, never this text)
IFS= read -r access_key || fail "stdin: expected the S3 access key on line 1"
IFS= read -r secret_key || [[ -n $secret_key ]] || fail "stdin: expected the S3 secret key on line 2"
# s3cmd reads a config value starting with '$' from the environment, and a line break would
# end it: accept only the characters RGW keys are made of
[[ $access_key =~ ^[A-Za-z0-9]{16,128}$ ]] || fail "the access key must be 16-128 letters/digits"
[[ $secret_key =~ ^[A-Za-z0-9+/]{20,128}$ ]] || fail "the secret key must be 20-128 letters/digits/+/"

# A run killed with SIGKILL cannot run its EXIT trap and leaves its scratch dir (and the key
# file in it) behind: remove those of earlier runs whose process is gone.
scratch_parent=${TMPDIR:-/tmp}
for old in "$scratch_parent"/airflow-log-migration.*; do
    [[ -d $old && ! -L $old && -O $old && -f $old/pid ]] || continue
    old_pid=
    IFS= read -r old_pid < "$old/pid" || true
    [[ $old_pid =~ ^[0-9]+$ ]] || continue
    if [[ ! -e /proc/$old_pid ]]; then
        rm -rf -- "$old"
        printf '%s: removed the scratch dir %s of an interrupted run\n' "$0" "$old" >&2
    fi
done

scratch=$(mktemp -d "$scratch_parent/airflow-log-migration.XXXXXXXX")
# the key file first; a worker ended by a signal may still be closing its log as rm runs: retry
trap 'rm -f -- "$scratch/s3cfg"; rm -rf -- "$scratch" 2>/dev/null || { sleep 1; rm -rf -- "$scratch"; }' EXIT
# exit (running the EXIT trap) on INT/HUP too, as on TERM (the header's trap); the sync replaces
# these to stop its workers
trap 'exit 130' INT
trap 'exit 129' HUP
printf '%s\n' "$$" > "$scratch/pid"

# the s3cmd config (0600 under umask 077); printf is a builtin, so no key reaches an argv.
# host_bucket without a bucket placeholder = path-style addressing (the runbook's --host-bucket=no)
config=$scratch/s3cfg
{
    printf '[default]\n'
    printf 'access_key = %s\n' "$access_key"
    printf 'secret_key = %s\n' "$secret_key"
    printf 'host_base = %s\n' "$s3_host"
    printf 'host_bucket = %s\n' "$s3_host"
    printf 'bucket_location = %s\n' "$region"
    printf 'use_https = %s\n' "$use_https"
    printf 'check_ssl_certificate = True\n'
    printf 'check_ssl_hostname = True\n'
    printf 'ca_certs_file = %s\n' "$ca_file"
    printf 'signature_v2 = False\n'
    printf 'delete_removed = False\n'
    printf 'follow_symlinks = False\n'
} > "$config"
unset access_key secret_key

if [[ $step == verify ]]; then
    # the verification: the tree against the bucket listing, key by key
    s3cmd -c "$config" ls -r "s3://$bucket/" < /dev/null > "$scratch/listing" 2> "$scratch/ls.err" || {
        rc=$?
        cat "$scratch/ls.err" >&2
        fail "s3cmd ls -r s3://$bucket/ failed (exit $rc)"
    }
    rc=0
    python3 - compare "$logs_dir" "$scratch/listing" "$bucket" <<<"$log_sync_py" || rc=$?
    case $rc in
        0) ;;
        3) exit 1 ;;  # a path the SSH user cannot read; the helper said which, and the fix, in one line
        1) fail "s3://$bucket/ does not hold every file of $logs_dir (table above)" ;;
        *) fail "cannot compare $logs_dir with s3://$bucket/ (python3 exit $rc)" ;;
    esac
    exit 0
fi

# the sync
started=$SECONDS

# the uploader and s3cmd run in the background so that a TERM/INT/HUP trap runs at once
worker=
on_signal() {
    # ignored, not reset: GNU timeout sends its TERM to this shell and to its group, and a second
    # TERM arriving with the default action would end this handler before the worker is stopped
    trap '' TERM INT HUP
    printf '%s: interrupted; stopping the upload (a re-run resumes)\n' "$0" >&2
    if [[ -n $worker ]]; then
        kill -TERM "$worker" 2>/dev/null || true
        # bounded: a worker that ignores the TERM is KILLed after 2 s, never waited for forever
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$worker" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
    fi
    reap_step
    exit "$1"
}
trap 'on_signal 143' TERM
trap 'on_signal 130' INT
trap 'on_signal 129' HUP

rc=0
python3 - upload "$logs_dir" "$config" "$scratch/result" "$scratch/big.list" "$bucket" "$s3_host" "$use_https" \
    "$region" "$ca_file" "$parallelism" "$progress_seconds" "$multipart_threshold" <<<"$log_sync_py" &
worker=$!
wait "$worker" || rc=$?
worker=
# 3: a path the SSH user cannot read; the helper said which, and the fix, in one line
[[ $rc -ne 3 ]] || exit 1
cd -- "$logs_dir"  # s3cmd below takes paths relative to it
result=
[[ -f $scratch/result ]] && IFS= read -r result < "$scratch/result"
[[ -n $result ]] || fail "the upload of $logs_dir failed (exit $rc, see above); nothing was deleted, re-run to resume"
read -r planned_files planned_bytes entries symlinks special uploaded uploaded_bytes failed big big_bytes _ <<<"$result"

# files above the multipart threshold: s3cmd, as the runbook (copy only, never delete)
copied=0 copied_bytes=0 big_failed=0
if [[ $big -gt 0 ]]; then
    printf '%s: %s uploading %s files over %s bytes (%s bytes) with s3cmd (multipart)\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$big" "$multipart_threshold" "$big_bytes" >&2
    s3rc=0
    s3cmd -c "$config" --no-delete-removed --no-progress --stats \
        --no-mime-magic --default-mime-type=text/plain \
        sync -r --files-from="$scratch/big.list" -- ./ "s3://$bucket/" \
        < /dev/null > "$scratch/s3cmd.out" 2> "$scratch/s3cmd.err" &
    worker=$!
    wait "$worker" || s3rc=$?
    worker=
    while IFS= read -r line; do printf '%s: s3cmd: %s\n' "$0" "$line" >&2; done < "$scratch/s3cmd.err"
    if [[ $s3rc -ne 0 ]]; then
        printf '%s: s3cmd sync of the %s big files FAILED: exit %s\n' "$0" "$big" "$s3rc" >&2
        big_failed=$big
    fi
    re_sent='^Stats: Number of files transferred: ([0-9]+) \(([0-9]+) bytes\)'
    re_copied='^Stats: Number of files copied: ([0-9]+) \(([0-9]+) bytes\)'
    while IFS= read -r line; do
        if [[ $line =~ $re_sent ]]; then
            uploaded=$((uploaded + BASH_REMATCH[1]))
            uploaded_bytes=$((uploaded_bytes + BASH_REMATCH[2]))
        elif [[ $line =~ $re_copied ]]; then
            copied=$((copied + BASH_REMATCH[1]))
            copied_bytes=$((copied_bytes + BASH_REMATCH[2]))
        fi
    done < "$scratch/s3cmd.out"
fi

summary="synced $logs_dir to s3://$bucket/: $planned_files files ($planned_bytes bytes) in $entries top-level entries;"
summary+=" uploaded $uploaded ($uploaded_bytes bytes), copied $copied server-side ($copied_bytes bytes);"
summary+=" not uploaded: $symlinks symlinks, $special special files;"
summary+=" $parallelism parallel uploads, $big files over $multipart_threshold bytes by s3cmd, $((SECONDS - started)) s"
if [[ $rc -ne 0 || $failed -gt 0 || $big_failed -gt 0 ]]; then
    printf '%s\n' "$summary" >&2
    fail "$((failed + big_failed)) of $planned_files files failed to upload (see above); nothing was deleted, re-run to resume"
fi
if [[ $final_pass == 1 ]]; then
    printf '%s: %s downtime can end: the last log sync is done (%s files uploaded); verify and the Kubernetes scheduler follow\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$uploaded" >&2
fi
printf '%s\n' "$summary"
