#!/bin/bash
# shellcheck shell=bash
# Deleting an RGW user Command deletes nothing (the user owns the instance's buckets): this
# prints what is kept and the manual removal on stderr (components/rgw_user.py).
# Filled in by the program: notice (the lines of rgw_user.kept_instructions); it runs nothing
# privileged, so remote.script gives it no sudo array.

printf '%s\n' "${notice[@]}" >&2
