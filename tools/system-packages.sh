#!/usr/bin/env bash
# Debian packages the integration tests start for real; installs only what is missing.
set -euo pipefail
PACKAGES=(sudo procps openssh-server openssh-client shellcheck krb5-kdc krb5-admin-server krb5-user ceph-mon ceph-osd radosgw s3cmd postgresql-15 postgresql-client-15)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
