#!/bin/bash
# shellcheck shell=bash
# Run on the KDC host when the keytab Command is deleted (components/kerberos.py delete_script):
# deletes no principal; removes the root-only spool copy of the keytab an interrupted run may
# have left, and prints on stderr what is kept and how to remove it by hand.
# Filled in by the program: kept (the lines of kerberos.kept_instructions), the privileged
# tools' absolute paths (timeout_bin, rm_bin), tool_timeout and tool_kill_after (seconds),
# spool_keytab, and the sudo array.

# the same rule the keytab script uses (exact arguments, under root's own timeout)
if ! "${sudo[@]}" "$timeout_bin" "--kill-after=${tool_kill_after}s" "${tool_timeout}s" "$rm_bin" -f -- "$spool_keytab"; then
    printf 'could not remove %s (the sudoers rules already gone?); remove it by hand if it exists\n' "$spool_keytab" >&2
fi
printf '%s\n' "${kept[@]}" >&2
