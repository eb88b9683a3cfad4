"""Taking over a running instance changes none of its credentials, proved with the real services
(issue 12, part 3): the real Ceph RGW (fixtures_rgw.py) and the real MIT KDC (fixtures_kdc.py).

* RGW: a user that exists with its key pair (made the runbook's way, by radosgw-admin, or with a
  given pair), then the RGW user script run with that same pair on stdin, as the program sends it
  when the pair is in stack config (``airflowS3AccessKey``/``...SecretKey``): "unchanged", the
  user's metadata (``radosgw-admin metadata get user:<uid>``: version, mtime, keys) identical.
  A control run with another pair shows the same measure does see a change.
* KDC: principals that exist (made by the keytab script, or by hand and rotated since), then the
  keytab script run again: no key version (kvno) changes, and the keytab the running instance
  already holds still authenticates.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from components import kerberos, rgw_user
from tests.conftest import run_stack
from tests.integration.fixtures_kdc import Kdc, kdc, keytab_script_for, parse_keytab  # noqa: F401
from tests.integration.fixtures_rgw import RgwCluster, S3Keys, ScriptRun, rgw  # noqa: F401
from tools import mockrun

REALM = "WIKIMEDIA"
PRINCIPALS = kerberos.principals("analytics-search", "airflow-search.discovery.wmnet", REALM)
KDC_DATABASE = ("principal", "principal.kadm5")


# --- RGW ----------------------------------------------------------------------------------------

def unique_uid(kind: str) -> str:
    # one RGW cluster per pytest session, shared by every module: uids must not collide
    return f"airflow-takeover-{kind}-{secrets.token_hex(3)}"


def metadata(rgw: RgwCluster, uid: str) -> dict:
    return rgw.radosgw_admin_json("metadata", "get", f"user:{uid}")


def key_list(meta: dict) -> list[tuple[str, str, str]]:
    return [(k["user"], k["access_key"], k["secret_key"]) for k in meta["data"]["keys"]]


def run_script(rgw: RgwCluster, uid: str, stdin: str, keys: S3Keys) -> ScriptRun:
    run = rgw.run_script(rgw_user.rgw_user_script(uid, uid), stdin,
                         forbidden_in_argv=[keys.access_key, keys.secret_key])
    assert run.argv_leaks == [], f"a key appeared in a process argv: {run.argv_leaks}"
    for key in (keys.access_key, keys.secret_key):
        assert key not in run.stdout and key not in run.stderr, "a key was printed"
    return run


def assert_taken_over_unchanged(rgw: RgwCluster, uid: str, keys: S3Keys, stdin: str | None = None) -> None:
    before = metadata(rgw, uid)
    run = run_script(rgw, uid, keys.stdin() if stdin is None else stdin, keys)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"user {uid}: unchanged\n", run.stdout
    assert run.stderr == "", "nothing to report: the user already holds the pair"
    after = metadata(rgw, uid)
    assert after["ver"]["ver"] == before["ver"]["ver"], "the user's metadata version changed"
    assert key_list(after) == key_list(before), "the user's key list changed"
    assert after == before, "the user's metadata (version, mtime, keys, caps) is identical"


def test_user_made_by_radosgw_admin_is_taken_over_with_its_own_pair(rgw):
    # the runbook's way: radosgw-admin generates the pair; the operator copies it into config
    uid = unique_uid("runbook")
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}")
    [existing] = metadata(rgw, uid)["data"]["keys"]
    keys = S3Keys(existing["access_key"], existing["secret_key"])
    assert_taken_over_unchanged(rgw, uid, keys)


def test_user_created_with_a_pair_is_taken_over_unchanged_with_that_pair(rgw):
    uid = unique_uid("pair")
    keys = S3Keys.generate()
    # keys through CEPH_ARGS, never argv (as the fixture and the script do)
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}",
            extra_env={"CEPH_ARGS": f"--access-key={keys.access_key} --secret-key={keys.secret_key}"})
    for _ in range(2):  # the first `up` of the takeover, and any re-run of it
        assert_taken_over_unchanged(rgw, uid, keys)


def test_base64_shaped_secret_and_a_second_pair_are_kept(rgw):
    # an older radosgw-admin drew secrets from the base64 alphabet, and a running user may hold a
    # second pair (the out-of-band backup's): config names one of them, nothing else moves
    uid = unique_uid("two-pairs")
    ours = S3Keys(S3Keys.generate().access_key, "Ab+/" + S3Keys.generate().secret_key[4:])
    other = S3Keys.generate()
    for pair in (other, ours):
        verb = ("user", "create", f"--display-name={uid}") if pair is other else ("key", "create", "--key-type=s3")
        rgw.run("radosgw-admin", *verb, f"--uid={uid}",
                extra_env={"CEPH_ARGS": f"--access-key={pair.access_key} --secret-key={pair.secret_key}"})
    assert len(key_list(metadata(rgw, uid))) == 2
    assert_taken_over_unchanged(rgw, uid, ours)


def test_the_programs_stdin_for_a_configured_pair_changes_nothing(rgw):
    """End to end: the pair of a running user in stack config, the program rendered with
    ``takeover: true``, and the stdin of its RGW Command fed to the real script."""
    uid = unique_uid("program")
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}")
    [existing] = metadata(rgw, uid)["data"]["keys"]
    keys = S3Keys(existing["access_key"], existing["secret_key"])
    pg = S3Keys.generate()
    run = run_stack("search", overrides={"takeover": True}, secret_overrides={
        "airflowS3AccessKey": keys.access_key, "airflowS3SecretKey": keys.secret_key,
        "postgresqlS3AccessKey": pg.access_key, "postgresqlS3SecretKey": pg.secret_key,
    })
    assert run.error is None, run.error
    stdin = run.monitor.named("search-rgw-airflow-user").inputs["stdin"]
    assert isinstance(stdin, mockrun.SecretLeaf)
    assert_taken_over_unchanged(rgw, uid, keys, stdin=stdin.value)


def test_control_another_pair_does_change_the_user(rgw):
    # the measure above can see a change: a generated pair (what the program did before
    # takeover existed) adds a second key pair and bumps the metadata version
    uid = unique_uid("control")
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}")
    before = metadata(rgw, uid)
    generated = S3Keys.generate()
    run = run_script(rgw, uid, generated.stdin(), generated)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"user {uid}: key added\n"
    after = metadata(rgw, uid)
    assert after["ver"]["ver"] > before["ver"]["ver"], "a real change bumps the metadata version"
    assert len(key_list(after)) == 2, "and the running user ends up with a second pair"


# --- KDC ----------------------------------------------------------------------------------------

def kvnos(kdc: Kdc) -> dict[str, int]:
    return {p: kdc.kvno(p) for p in PRINCIPALS}


def database(kdc: Kdc) -> dict[str, str]:
    return {name: hashlib.sha256((kdc.directory / name).read_bytes()).hexdigest() for name in KDC_DATABASE}


def run_keytab_script(kdc: Kdc) -> bytes:
    done = kdc.run_script(keytab_script_for(kdc, PRINCIPALS))
    assert done.returncode == 0, f"keytab script failed: {done.stderr.decode()}"
    assert "created: " not in done.stderr.decode(), f"an existing principal was created again: {done.stderr.decode()}"
    return base64.b64decode(done.stdout, validate=True)


def keys_of(keytab: bytes) -> set[tuple[str, int, int, bytes]]:
    return {(e.principal, e.kvno, e.enctype, e.key) for e in parse_keytab(keytab)[1]}


def test_principals_made_by_the_keytab_script_keep_their_kvno(kdc):
    first = kdc.run_script(keytab_script_for(kdc, PRINCIPALS))
    assert first.returncode == 0, first.stderr.decode()
    assert first.stderr.decode().count("created: ") == len(PRINCIPALS)
    before, db_before = kvnos(kdc), database(kdc)
    second = run_keytab_script(kdc)
    assert kvnos(kdc) == before == {p: 1 for p in PRINCIPALS}, "no key version changed"
    assert database(kdc) == db_before, "the KDC database files are byte-identical"
    assert keys_of(second) == keys_of(base64.b64decode(first.stdout)), "the same keys are exported"


def test_hand_made_rotated_principals_keep_their_kvno_and_the_running_keytab_works(kdc):
    # a running instance: principals made by hand (the runbook), one rotated since, and the
    # keytab the instance runs with exported back then
    for principal in PRINCIPALS:
        done = kdc.kadmin("addprinc", "-randkey", principal)
        assert done.returncode == 0, done.stderr.decode()
    for _ in range(2):
        done = kdc.kadmin("cpw", "-randkey", PRINCIPALS[1])
        assert done.returncode == 0, done.stderr.decode()
    running = kdc.directory / "running.keytab"
    done = kdc.kadmin("ktadd", "-norandkey", "-k", str(running), *PRINCIPALS)
    assert done.returncode == 0, done.stderr.decode()
    before, db_before = kvnos(kdc), database(kdc)
    assert before == {PRINCIPALS[0]: 1, PRINCIPALS[1]: 3, PRINCIPALS[2]: 1}

    taken_over = run_keytab_script(kdc)
    assert kvnos(kdc) == before, "taking over changed a key version"
    assert database(kdc) == db_before, "the KDC database files are byte-identical"
    assert keys_of(taken_over) == keys_of(running.read_bytes()), "the program exports the running keys"
    for principal in PRINCIPALS:
        done = kdc.kinit(running, principal)
        assert done.returncode == 0, f"the running keytab no longer works for {principal}: {done.stderr.decode()}"
