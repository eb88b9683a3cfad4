"""The keytab script (components/kerberos.py) run for real against a throwaway MIT KDC, locally.

Each test gets its own realm WIKIMEDIA (kdb5_util + krb5kdc on loopback, ~40 ms); the script
text is what the Command runs on the KDC host, started as ``bash -c SCRIPT NAME``, built with
``use_sudo=False`` (the SSH user is root) and the real tools, kadmin.local finding the test realm
through the environment it inherits, the spool in the realm's directory.  The same script through
real SSH and real sudo, as a non-root account with exactly the documented rules:
tests/integration/test_kdc_over_ssh.py.  These stay: they drive the KDC's own failure modes
(realm not served, missing database, read-only database, host default realm) cheaply.
"""

from __future__ import annotations

import base64
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from components import kerberos
from tests.integration.fixtures_kdc import SYSTEM_PATH, Kdc, kdc, local_tools, make_realm, parse_keytab  # noqa: F401,F811

REALM = "WIKIMEDIA"
FQDN = "airflow-search.discovery.wmnet"
PRINCIPALS = kerberos.principals("analytics-search", FQDN, REALM)
STEP_SECONDS = 60
BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
AES256, AES128 = 18, 17


def keytab_script(kdc: Kdc, names: list[str] = PRINCIPALS, realm: str = REALM, **tools: str) -> str:
    return kerberos.keytab_script(realm, names, use_sudo=False, timeout_seconds=STEP_SECONDS,
                                  tools=local_tools(kdc, **tools))


def run_ok(kdc: Kdc, script: str | None = None, **kwargs) -> bytes:
    """The decoded keytab printed by a successful run; stdout must hold base64 and nothing else."""
    done = kdc.run_script(script or keytab_script(kdc), **kwargs)
    assert done.returncode == 0, f"keytab script failed ({done.returncode}): {done.stderr.decode()}"
    assert BASE64.fullmatch(done.stdout), f"stdout must be bare base64, got {done.stdout[:200]!r}"
    return base64.b64decode(done.stdout, validate=True)


def run_failing(kdc: Kdc, script: str | None = None, **kwargs) -> str:
    """stderr of a run that must fail, after checking it printed nothing on stdout."""
    done = kdc.run_script(script or keytab_script(kdc), **kwargs)
    assert done.returncode != 0, f"the script must fail; stderr: {done.stderr.decode()}"
    assert done.stdout == b"", f"a failed run must print no (partial) keytab, got {done.stdout[:200]!r}"
    return done.stderr.decode()


def save(kdc: Kdc, keytab: bytes, name: str) -> Path:
    path = kdc.directory / name
    path.write_bytes(keytab)
    path.chmod(0o600)
    return path


def assert_scratch_empty(kdc: Kdc) -> None:
    left = list(Path(kdc.env["TMPDIR"]).iterdir())
    assert left == [], f"the script must remove its temp dir, left {left}"
    spooled = kdc.directory / "spool" / FQDN / "keytab"
    assert not spooled.exists(), f"root's spool copy {spooled} must be removed"


def kadmin_shim(kdc: Kdc, skip_addprinc_of: str) -> str:
    """The keytab script with a kadmin.local that answers 0 to ``addprinc`` of matching names without doing it.

    That is the state ktadd meets when a principal is missing at export time (removed by
    someone in between, or never created): ktadd skips it and still exits 0.
    """
    real = shutil.which("kadmin.local", path=SYSTEM_PATH)
    bin_dir = kdc.directory / "shim"
    bin_dir.mkdir()
    shim = bin_dir / "kadmin.local"
    shim.write_text(f"""#!/bin/bash
# argv: -r REALM addprinc -randkey NAME
if [[ "$3" == addprinc && "$5" == {skip_addprinc_of} ]]; then exit 0; fi
exec {real} "$@"
""")
    shim.chmod(0o755)
    return keytab_script(kdc, kadmin_local=str(shim))


# --- the happy path -------------------------------------------------------------------------

def test_first_run_creates_the_principals_and_prints_only_their_keytab(kdc):
    keytab = run_ok(kdc)
    version, entries = parse_keytab(keytab)
    assert version == 0x0502, f"keytab version {version:#06x}"
    assert [e.principal for e in entries] == [p for p in PRINCIPALS for _ in (AES256, AES128)], (
        "one aes256 and one aes128 entry per principal, in the order given")
    assert [e.enctype for e in entries] == [AES256, AES128] * 3, "the KDC's default enctypes"
    assert {e.kvno for e in entries} == {1}, "new principals are at kvno 1"
    for principal in PRINCIPALS:
        assert kdc.kvno(principal) == 1, f"{principal} exists in the database at kvno 1"
    assert_scratch_empty(kdc)


def test_exported_timestamps_are_zero(kdc):
    _, entries = parse_keytab(run_ok(kdc))
    assert [e.timestamp for e in entries] == [0] * len(entries), "every entry's timestamp is normalized to 0"


def test_second_run_prints_the_same_bytes_and_rotates_nothing(kdc):
    first = run_ok(kdc)
    # cross a second boundary: un-normalized exports differ exactly there (the study, §4)
    time.sleep(1.05 - (time.time() % 1))
    done = kdc.run_script(keytab_script(kdc))
    assert done.returncode == 0, f"second run failed: {done.stderr.decode()}"
    second = base64.b64decode(done.stdout)
    assert second == first, "a re-run must print byte-identical base64"
    for principal in PRINCIPALS:
        assert f"exists: {principal}" in done.stderr.decode(), f"the second run finds {principal}"
        assert kdc.kvno(principal) == 1, f"{principal} was rotated"
    assert [(e.principal, e.kvno) for e in parse_keytab(second)[1]] == [
        (e.principal, e.kvno) for e in parse_keytab(first)[1]], "same principals and kvno"


def test_both_runs_keytabs_authenticate_every_principal(kdc):
    first = save(kdc, run_ok(kdc), "first.keytab")
    second = save(kdc, run_ok(kdc), "second.keytab")
    for keytab in (first, second):
        for principal in PRINCIPALS:
            done = kdc.kinit(keytab, principal)
            assert done.returncode == 0, f"kinit -k -t {keytab.name} {principal}: {done.stderr.decode()}"


def test_preexisting_principal_keeps_its_keys(kdc):
    existing = PRINCIPALS[0]
    assert kdc.kadmin("addprinc", "-randkey", existing).returncode == 0, "set-up: addprinc"
    deployed = kdc.directory / "deployed.keytab"
    done = kdc.kadmin("ktadd", "-norandkey", "-k", str(deployed), existing)
    assert done.returncode == 0 and deployed.exists(), f"set-up: ktadd {done.stderr.decode()}"

    _, entries = parse_keytab(run_ok(kdc))
    assert kdc.kvno(existing) == 1, f"{existing} must stay at kvno 1"
    _, old_entries = parse_keytab(deployed.read_bytes())
    exported = {(e.enctype, e.kvno, e.key) for e in entries if e.principal == existing}
    assert exported == {(e.enctype, e.kvno, e.key) for e in old_entries}, "the export carries the same keys"
    done = kdc.kinit(deployed, existing)
    assert done.returncode == 0, f"the keytab deployed before the run must still work: {done.stderr.decode()}"


def test_hostile_runs_as_is_created_verbatim_and_never_executed(kdc):
    names = kerberos.principals("a;$(touch${IFS}pwned)`touch${IFS}pwned2`", FQDN, REALM)
    _, entries = parse_keytab(run_ok(kdc, keytab_script(kdc, names), cwd=kdc.directory))
    assert {e.principal for e in entries} == set(names), "the keytab holds the names verbatim"
    assert kdc.kvno(names[0]) == 1, "the principal exists under its literal name"
    assert not (kdc.directory / "pwned").exists(), "the $(...) in the name was executed"
    assert not (kdc.directory / "pwned2").exists(), "the backquotes in the name were executed"


# --- the failures it must not hide ----------------------------------------------------------

def test_realm_not_served_by_this_kdc_fails_loudly(kdc):
    other = kerberos.principals("analytics-search", FQDN, "EXAMPLE.ORG")
    stderr = run_failing(kdc, keytab_script(kdc, other, "EXAMPLE.ORG"))
    assert "realm EXAMPLE.ORG is not served by the KDC database on this host" in stderr, stderr
    assert "Cannot open DB2 database" in stderr, f"kadmin.local's reason is passed on: {stderr}"
    for name in other:
        assert kdc.kadmin("getprinc", name).returncode != 0, f"{name} must not be filed in WIKIMEDIA"
    assert_scratch_empty(kdc)


@pytest.mark.parametrize("host_krb5_conf", ["other default realm", "no krb5.conf"])
def test_host_default_realm_does_not_redirect_the_writes(kdc, host_krb5_conf):
    """With -r, a KDC host whose krb5.conf names another default realm (or has no krb5.conf)
    still gets the principals in WIKIMEDIA; without -r kadmin.local files them in the default
    realm's database, or stops with "unable to get default realm" (the study, §3)."""
    conf = kdc.directory / "krb5.conf"
    env = {}
    if host_krb5_conf == "no krb5.conf":
        env["KRB5_CONFIG"] = str(kdc.directory / "no-such-krb5.conf")
    else:
        conf.write_text(conf.read_text().replace("default_realm = WIKIMEDIA", "default_realm = OTHER.REALM"))
    _, entries = parse_keytab(run_ok(kdc, env=env))
    assert {e.principal for e in entries} == set(PRINCIPALS), "principals of WIKIMEDIA"
    for principal in PRINCIPALS:
        assert kdc.kvno(principal) == 1, f"{principal} is in the WIKIMEDIA database"


def test_missing_database_fails_loudly(kdc):
    for path in kdc.directory.glob("principal*"):
        path.unlink()
    stderr = run_failing(kdc)
    assert "realm WIKIMEDIA is not served" in stderr and "Cannot open DB2 database" in stderr, stderr


def test_kdc_profile_that_does_not_exist_fails_loudly(kdc):
    # kadmin.local silently ignores a missing KRB5_KDC_PROFILE and opens the compiled-in database path
    stderr = run_failing(kdc, env={"KRB5_KDC_PROFILE": str(kdc.directory / "no-such-kdc.conf")})
    assert "realm WIKIMEDIA is not served" in stderr, stderr


def test_principal_the_kdc_refuses_to_create_fails_without_output():
    """A read-only principal database: getprinc answers "does not exist", addprinc is refused.

    As root the file mode would not stop kadmin.local, so the realm belongs to nobody and the
    script runs as nobody; it lives outside pytest's root-only temp dir so nobody can reach it.
    """
    directory = Path(tempfile.mkdtemp(prefix="kdc-readonly-"))
    realm = None
    try:
        realm = make_realm(directory / "realm", start=False)
        for path in [directory, *directory.rglob("*")]:
            shutil.chown(path, "nobody", "nogroup")
        (realm.directory / "principal").chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        stderr = run_failing(realm, user="nobody")
        assert f"addprinc {PRINCIPALS[0]} failed" in stderr and "Permission denied" in stderr, stderr
        assert_scratch_empty(realm)
    finally:
        if realm is not None:
            realm.stop()
        shutil.rmtree(directory)


def test_principal_missing_at_export_fails_rather_than_print_a_partial_keytab(kdc):
    missing = PRINCIPALS[2]
    stderr = run_failing(kdc, kadmin_shim(kdc, "HTTP/*"))
    assert f"missing from the exported keytab: {missing}" in stderr, stderr
    assert "missing from the exported keytab: " + PRINCIPALS[0] not in stderr, "only the missing one is named"
    assert_scratch_empty(kdc)


def test_no_principal_at_export_fails_rather_than_print_nothing(kdc):
    stderr = run_failing(kdc, kadmin_shim(kdc, "*"))
    assert "ktadd wrote no keytab" in stderr, stderr
    assert_scratch_empty(kdc)


def test_getprinc_failure_other_than_not_found_aborts(kdc):
    # a name kadmin.local cannot parse: getprinc fails for another reason than "does not exist"
    names = kerberos.principals("a@b", FQDN, REALM)
    stderr = run_failing(kdc, keytab_script(kdc, names))
    assert f"getprinc {names[0]} failed" in stderr and "Malformed representation of principal" in stderr, stderr
    assert "created:" not in stderr, "nothing may be created after an unexpected getprinc failure"


def test_realm_fixture_uses_only_its_own_files(kdc):
    """The fixture never reads or writes the host's Kerberos files."""
    assert kdc.env["KRB5_CONFIG"].startswith(str(kdc.directory)), "KRB5_CONFIG in the temp dir"
    assert kdc.env["KRB5_KDC_PROFILE"].startswith(str(kdc.directory)), "KRB5_KDC_PROFILE in the temp dir"
    assert kdc.timings["create_s"] < 5 and kdc.timings["start_s"] < 5, f"realm set-up is fast: {kdc.timings}"
