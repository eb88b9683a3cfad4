"""The Kerberos keytab step as text: the scripts, their quoting, and the Command around them.

tests/integration/test_kerberos_kdc.py runs the same text against a real KDC.
Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pulumi
import pytest
import pulumi_command as command
from pulumi.runtime import mocks as pm

from components import kerberos, remote
from tools import mockrun
from tests.goldens import golden

REALM = "WIKIMEDIA"
SEARCH = kerberos.principals("analytics-search", "airflow-search.discovery.wmnet", REALM)
HOSTILE_RUNS_AS = ["a b;$(id)", "x`id`", "it's", 'q"uote', "semi;colon", "new\nline", "star*", "$HOME"]




def kadmin_calls(script: str) -> list[str]:
    """Each kadmin.local the script runs (in command position: line start or ``$(``), to the line end."""
    return re.findall(r"(?:^[ \t]*|\$\()(kadmin\.local\b[^\n]*)", script, flags=re.MULTILINE)


# --- principals ---------------------------------------------------------------------------

def test_principals_are_runs_as_airflow_and_http_on_the_service_fqdn():
    assert SEARCH == [
        "analytics-search/airflow-search.discovery.wmnet@WIKIMEDIA",
        "airflow/airflow-search.discovery.wmnet@WIKIMEDIA",
        "HTTP/airflow-search.discovery.wmnet@WIKIMEDIA",
    ]


# --- keytab script ------------------------------------------------------------------------

def test_keytab_script_matches_golden():
    golden("kerberos_keytab_search.sh", kerberos.keytab_script(REALM, SEARCH))


def test_delete_script_matches_golden():
    golden("kerberos_delete_search.sh", kerberos.delete_script(REALM, SEARCH))


def test_keytab_script_is_valid_bash():
    for script in (kerberos.keytab_script(REALM, SEARCH), kerberos.delete_script(REALM, SEARCH)):
        done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"bash -n rejects the script: {done.stderr}"


def test_keytab_script_starts_with_the_strict_header():
    script = kerberos.keytab_script(REALM, SEARCH)
    assert script.startswith("#!/bin/bash\n"), "the script must be bash"
    assert "\nset -euo pipefail\n" in script and "\numask 077\n" in script, "header: strict mode and umask 077"


def test_every_principal_is_shell_quoted_in_the_keytab_script():
    script = kerberos.keytab_script(REALM, SEARCH)
    for principal in SEARCH:
        assert shlex.quote(principal) in script, f"{principal} must appear shlex-quoted"


@pytest.mark.parametrize("runs_as", HOSTILE_RUNS_AS)
def test_hostile_runs_as_comes_out_quoted(runs_as):
    names = kerberos.principals(runs_as, "airflow-search.discovery.wmnet", REALM)
    hostile = names[0]
    quoted = shlex.quote(hostile)
    assert quoted != hostile, f"{hostile!r} needs quoting"
    script = kerberos.keytab_script(REALM, names)
    assert quoted in script, f"{hostile!r} must appear as {quoted}"
    if "'" in hostile:
        assert hostile not in script, f"{hostile!r} appears unquoted"
    else:
        # every raw occurrence is the inside of a quoted one: no unquoted copy anywhere
        assert script.count(hostile) == script.count(quoted), f"{hostile!r} appears unquoted"
    # the delete script prints the command an operator would paste: quoted there too
    advice = run_delete_script(names)
    assert f"delprinc -force {quoted}\n" in advice, f"the delete advice must quote {hostile!r}"


@pytest.mark.parametrize("runs_as", ["-randkey", "--help"])
def test_runs_as_that_looks_like_an_option_is_rejected(runs_as):
    """kadmin.local would read a name that starts with '-' as an option."""
    names = kerberos.principals(runs_as, "airflow-search.discovery.wmnet", REALM)
    with pytest.raises(ValueError, match="option"):
        kerberos.keytab_script(REALM, names)


def test_hostile_runs_as_is_one_bash_word():
    """bash itself reads the quoted name back as one word, unexpanded."""
    names = kerberos.principals("a b;$(id)", "h.example", REALM)
    script = kerberos.keytab_script(REALM, names)
    array_line = next(line for line in script.splitlines() if line.startswith("principals=("))
    done = subprocess.run(["bash", "-c", f"{array_line}\nprintf '%s\\n' \"${{principals[@]}}\""],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == names, "the principals array must hold the names verbatim"


def test_every_ktadd_has_norandkey_and_none_without_it():
    script = kerberos.keytab_script(REALM, SEARCH)
    ktadds = [call for call in kadmin_calls(script) if re.search(r"\bktadd\b", call)]
    assert len(ktadds) == 1, f"one export, found {ktadds}"
    for call in ktadds:
        assert re.match(r"kadmin\.local -r WIKIMEDIA ktadd -norandkey -k ", call), (
            f"ktadd without -norandkey draws new keys and breaks deployed keytabs: {call!r}")
    # whatever the context, the word ktadd is never followed by anything but -norandkey in code
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith(("#", "echo ")))
    assert not re.search(r"\bktadd\b(?! -norandkey)", code), "a plain ktadd slipped in"


def test_every_kadmin_local_names_the_realm():
    script = kerberos.keytab_script(REALM, SEARCH)
    calls = kadmin_calls(script)
    assert len(calls) >= 4, f"krbtgt check, getprinc, addprinc, ktadd: {calls}"
    for call in calls:
        assert call.startswith("kadmin.local -r WIKIMEDIA "), f"kadmin.local without -r WIKIMEDIA: {call!r}"
    # nothing runs kadmin.local in another way (e.g. through a variable or after a pipe)
    mentions = [line for line in script.splitlines() if "kadmin.local" in line and not line.lstrip().startswith("#")]
    assert len(mentions) == len(calls) + 1, f"the calls and the realm check's message only: {mentions}"
    for line in run_delete_script(SEARCH).splitlines():
        if "kadmin.local" in line:
            assert "kadmin.local -r WIKIMEDIA delprinc" in line, f"delete advice without -r: {line!r}"


def test_kadmin_uses_the_argument_form_never_q():
    script = kerberos.keytab_script(REALM, SEARCH)
    assert not re.search(r"kadmin\.local[^\n]* -q\b", script), "-q always exits 0 and hides failures"


def test_addprinc_only_after_getprinc_says_not_found():
    script = kerberos.keytab_script(REALM, SEARCH)
    assert "addprinc -randkey" in script, "new principals get random keys"
    guard = script.index("*'Principal does not exist'*")
    assert guard < script.index("addprinc -randkey"), "addprinc must be guarded by the not-found answer"


def test_keytab_is_verified_with_klist_and_only_base64_reaches_stdout():
    script = kerberos.keytab_script(REALM, SEARCH)
    assert 'klist -k "$keytab"' in script, "the export must be checked with klist -k"
    assert "ktadd -norandkey" in script and '"${principals[@]}" >&2' in script, "ktadd's listing goes to stderr"
    # pulumi-command puts stdout in its error text when a command fails: the secret is printed
    # last, in one statement, after every check has passed
    # (with or without a newline after it: keytab_base64 strips whitespace)
    assert re.search(r'\nencoded="\$\(base64 -w0 "\$keytab"\)"\nprintf \'%s(\\n)?\' "\$encoded"\n\Z', script), \
        "the keytab is encoded into a variable, then printed as the very last statement"
    code = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert sum('"$encoded"' in line for line in code) == 1, "the encoded keytab is printed once, nowhere else"
    assert "mktemp -d" in script and "trap 'rm -rf -- \"$workdir\"' EXIT" in script, "fresh temp dir, removed on exit"


def test_keytab_script_reads_no_stdin():
    """The script holds no secret, and its own stdin stays free (the python is a heredoc)."""
    script = kerberos.keytab_script(REALM, SEARCH)
    assert "read -r" not in script, "nothing is read from stdin"
    assert "python3 - \"$keytab\" <<'PY'" in script, "the normalizer is a quoted heredoc"


def run_delete_script(names: list[str]) -> str:
    """stderr of the delete script, run with no kadmin.local reachable; it must succeed quietly."""
    script = kerberos.delete_script(REALM, names)
    done = subprocess.run(["/bin/bash", "-c", script, "delete"], capture_output=True, text=True,
                          env={"PATH": "/nonexistent"}, check=False)
    assert done.returncode == 0 and done.stdout == "", f"delete must be a quiet no-op: {done}"
    return done.stderr


def test_delete_script_prints_the_kept_instructions():
    """The delete output and the manual steps (kerberos.kept_instructions) say the same thing."""
    kept = kerberos.kept_instructions(REALM, SEARCH)
    assert run_delete_script(SEARCH) == "\n".join(kept) + "\n", "the delete script prints kept_instructions on stderr"
    for principal in SEARCH:
        assert f"  sudo kadmin.local -r WIKIMEDIA delprinc -force {principal}" in kept, f"manual step for {principal}"


def test_delete_script_deletes_nothing():
    script = kerberos.delete_script(REALM, SEARCH)
    head = remote.header(f"Kerberos principals in realm {REALM}: kept on delete")
    assert script.startswith(head), "the delete script starts with remote.header()"
    code = [line for line in script[len(head):].splitlines() if line and not line.startswith("#")]
    assert len(code) == 1, f"nothing but the header and one printf: {code}"
    assert code[0].startswith("printf ") and code[0].endswith(" >&2"), "the only command prints to stderr"
    advice = run_delete_script(SEARCH)
    for principal in SEARCH:
        assert f"delprinc -force {principal}" in advice, f"the advice names {principal}"


@pytest.mark.parametrize(
    "realm,names,why",
    [
        ("WIKIMEDIA", [], "no principals"),
        ("WIKIMEDIA", ["analytics/h.example"], "no realm"),
        ("WIKIMEDIA", ["analytics/h.example@OTHER"], "another realm"),
        ("WIKIMEDIA", ["analytics/h.example@wikimedia"], "realms are case-sensitive"),
        ("WIKIMEDIA", ["a/h@WIKIMEDIA", "a/h@WIKIMEDIA"], "duplicates"),
        ("", ["a/h@"], "empty realm"),
        ("WIKIMEDIA", ["-x/h@WIKIMEDIA"], "an option to kadmin.local"),
    ],
)
def test_keytab_script_rejects_principals_outside_the_realm(realm, names, why):
    with pytest.raises(ValueError):
        kerberos.keytab_script(realm, names)
    with pytest.raises(ValueError):
        kerberos.delete_script(realm, names)


# --- the component under Pulumi's mocks ---------------------------------------------------

class KeytabMocks(mockrun.Mocks):
    def new_resource(self, args: pm.MockResourceArgs):
        name, outputs = super().new_resource(args)
        if args.typ == "command:remote:Command":
            outputs["stdout"] = "QkFTRTY0\n"
        return name, outputs


def render_keytab(use_sudo: bool = True, with_precondition: bool = False):
    created: dict[str, object] = {}

    def program():
        # a stand-in for the namespace read: a resource the remote step must wait for
        after = [command.local.Command("precondition", create="true")] if with_precondition else []
        keytab = kerberos.KerberosKeytab(
            "search",
            kerberos.KerberosKeytabArgs(
                realm=REALM,
                principals=SEARCH,
                conn=command.remote.ConnectionArgs(host="krb1001.eqiad.wmnet", user="deploy",
                                                   private_key=pulumi.Output.secret("KEY"), host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaQlgHMVkTqY0HnPm1i8y5/TKASgAzqhyhQwFNnQYnU"),
                use_sudo=use_sudo,
                timeout_minutes=7,
                depends_on=after,
            ),
        )
        created["keytab"] = keytab
        pulumi.export("keytab", keytab.keytab_base64)

    run = mockrun.run_program("airflow", "search", {}, program=program, mocks=KeytabMocks())
    if run.error is not None:
        raise run.error
    return run.monitor


def test_component_creates_one_protected_secret_command():
    monitor = render_keytab()
    component = monitor.one("dpe:airflow:KerberosKeytab")
    cmd = monitor.one("command:remote:Command")
    assert cmd.name == "search-keytab", "the Command is named after the component"
    assert cmd.parent == component.urn, "the Command is the component's child"
    assert cmd.protect, "the keytab Command is protected"
    assert cmd.delete_before_replace, "the keytab Command is deleted before it is replaced"
    assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), "stdout (the keytab) is secret"
    assert cmd.inputs["logging"] == "stderr", "the Command logs stderr only (stdout is the keytab)"
    # 7 minutes on the remote host (420 s), + 30 s kill-after + 60 s for the engine
    assert cmd.custom_timeouts == {"create": "510s", "update": "510s", "delete": "510s"}, "timeouts"


def test_component_runs_the_keytab_script_through_sudo_under_the_remote_timeout():
    cmd = render_keytab().one("command:remote:Command")
    script = kerberos.keytab_script(REALM, SEARCH)
    bounded = "sudo -n timeout --kill-after=30s 420s /bin/bash -c "
    assert cmd.inputs["create"].startswith(f"{bounded}{shlex.quote(script)} search-keytab; "), "create"
    assert cmd.inputs["create"] == remote.wrap(script, True, "search-keytab", 420), "create"
    delete = kerberos.delete_script(REALM, SEARCH)
    assert cmd.inputs["delete"].startswith(f"{bounded}{shlex.quote(delete)} search-keytab; "), "delete is the no-op"
    assert cmd.inputs["delete"] == remote.wrap(delete, True, "search-keytab", 420), "delete"
    assert "stdin" not in cmd.inputs, "the keytab script takes nothing on stdin"


def test_component_without_sudo_still_runs_under_bash_and_timeout():
    cmd = render_keytab(use_sudo=False).one("command:remote:Command")
    script = kerberos.keytab_script(REALM, SEARCH)
    assert cmd.inputs["create"].startswith(
        f"timeout --kill-after=30s 420s /bin/bash -c {shlex.quote(script)} search-keytab; "), "no sudo, still bash"


def test_component_waits_for_its_preconditions():
    monitor = render_keytab(with_precondition=True)
    precondition = monitor.one("command:local:Command")
    cmd = monitor.one("command:remote:Command")
    assert precondition.urn in cmd.dependencies, "search-keytab must depend on the preconditions (depends_on)"
    assert render_keytab().one("command:remote:Command").dependencies == [], "no preconditions, no dependencies"


def test_component_triggers_on_realm_and_principals():
    cmd = render_keytab().one("command:remote:Command")
    assert cmd.inputs["triggers"] == [REALM, *SEARCH], "a new realm or principal set means a new keytab"
    assert "triggers[*]" in cmd.replace_on_changes, "a trigger change replaces the Command"


def test_component_exposes_the_keytab_as_a_stripped_secret():
    monitor = render_keytab()
    component = monitor.one("dpe:airflow:KerberosKeytab")
    output = monitor.outputs[component.urn]["keytab_base64"]
    assert isinstance(output, mockrun.SecretLeaf), "keytab_base64 must be secret"
    assert output.value == "QkFTRTY0", "keytab_base64 is the stdout without whitespace"
    exported = monitor.stack_outputs["keytab"]
    assert isinstance(exported, mockrun.SecretLeaf), "an export of the keytab stays secret"


# --- the keytab script run against a stand-in KDC -------------------------------------------
#
# pulumi-command puts the command's output in its error text when the command fails, whatever
# ``logging`` says, so the keytab (stdout) must reach stdout only once every check has passed.
# A stand-in kadmin.local and klist (below; the real ones: tests/integration/test_kerberos_kdc.py)
# drive the script through each failure, and stdout must then be empty.

FAKE_KADMIN = textwrap.dedent('''\
    """Enough of MIT kadmin.local (-r REALM getprinc/addprinc/ktadd) for the keytab script."""
    import fnmatch, hashlib, json, os, struct, sys
    state = os.environ["FAKE_KDC_DIR"]
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    db_file = os.path.join(state, "principals.json")
    db = json.load(open(db_file))
    if sys.argv[1:2] != ["-r"]:
        sys.exit("fake kadmin.local: -r REALM expected")
    realm, verb, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
    if verb == "getprinc":
        (name,) = rest
        if name in db:
            print("Principal: %s\\nKey: vno 1, aes256-cts-hmac-sha1-96" % name)
        elif os.environ.get("FAKE_GETPRINC_ERROR"):
            print("get_principal: %s while retrieving \\"%s\\"." % (os.environ["FAKE_GETPRINC_ERROR"], name), file=sys.stderr)
            sys.exit(1)
        else:
            print("get_principal: Principal does not exist while retrieving \\"%s\\"." % name, file=sys.stderr)
            sys.exit(1)
    elif verb == "addprinc":
        assert rest[0] == "-randkey", rest
        name = rest[1]
        if os.environ.get("FAKE_ADDPRINC_FAILS"):
            print("add_principal: Insufficient access while creating \\"%s\\"." % name, file=sys.stderr)
            sys.exit(1)
        if not fnmatch.fnmatchcase(name, os.environ.get("FAKE_SKIP_ADDPRINC", "\\0")):
            db.append(name)
            json.dump(db, open(db_file, "w"))
        print("Principal \\"%s\\" created." % name)
    elif verb == "ktadd":
        assert rest[:2] == ["-norandkey", "-k"], rest
        path, names = rest[2], rest[3:]
        if os.environ.get("FAKE_KTADD_GARBAGE"):
            open(path, "wb").write(b"not a keytab")
            sys.exit(0)
        records = []
        for name in names:
            if name not in db:  # MIT ktadd skips it, says so, and still exits 0
                print("kadmin.local: Principal %s does not exist." % name, file=sys.stderr)
                continue
            primary, _, name_realm = name.rpartition("@")
            body = struct.pack(">H", len(primary.split("/")))
            for part in [name_realm] + primary.split("/"):
                body += struct.pack(">H", len(part)) + part.encode()
            key = hashlib.sha256(name.encode()).digest()  # the principal's current key, stable
            body += struct.pack(">IIBHH", 1, 1700000000 + len(records), 1, 18, len(key)) + key
            records.append(struct.pack(">i", len(body)) + body)
            print("Entry for principal %s with kvno 1, encryption type aes256-cts-hmac-sha1-96 added to keytab WRFILE:%s." % (name, path))
        if records:
            open(path, "ab").write(b"\\x05\\x02" + b"".join(records))
    else:
        sys.exit("fake kadmin.local: unsupported %s" % verb)
''')

FAKE_KLIST = textwrap.dedent('''\
    """klist -k FILE: the principals of a version 0x0502 keytab, as MIT klist lists them."""
    import os, struct, sys
    if os.environ.get("FAKE_KLIST_FAILS"):
        print("klist: Unsupported key table format version number while starting keytab scan", file=sys.stderr)
        sys.exit(1)
    assert sys.argv[1] == "-k", sys.argv
    path = sys.argv[2]
    data = open(path, "rb").read()
    print("Keytab name: FILE:%s\\nKVNO Principal\\n---- " % path + "-" * 60)
    pos = 2
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        p = pos
        (count,) = struct.unpack_from(">H", data, p)
        p += 2
        parts = []
        for _ in range(count + 1):
            (length,) = struct.unpack_from(">H", data, p)
            parts.append(data[p + 2:p + 2 + length].decode())
            p += 2 + length
        print("   1 %s@%s" % ("/".join(parts[1:]), parts[0]))
        pos += size
''')

FAKE_BASE64_FAILS = "#!/bin/sh\nprintf 'BFAKEPARTIAL'\nexit 1\n"  # a partial result, then failure


class FakeKdc:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, source in (("kadmin.local", FAKE_KADMIN), ("klist", FAKE_KLIST)):
            tool = self.bin / name
            tool.write_text(f"#!{sys.executable}\n{source}")
            tool.chmod(0o755)
        self.principals([f"krbtgt/{REALM}@{REALM}"])
        # no /usr/sbin: the host's real kadmin.local must not be found
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_KDC_DIR": str(root), "HOME": str(root)}

    def principals(self, names: list[str]) -> None:
        (self.root / "principals.json").write_text(json.dumps(names))

    def stored(self) -> list[str]:
        return json.loads((self.root / "principals.json").read_text())

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def base64_fails(self) -> None:
        tool = self.bin / "base64"
        tool.write_text(FAKE_BASE64_FAILS)
        tool.chmod(0o755)

    def run(self, **env: str) -> subprocess.CompletedProcess:
        script = kerberos.keytab_script(REALM, SEARCH)
        return subprocess.run(["/bin/bash", "-c", script, "search-keytab"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env={**self.env, **env}, timeout=60)

    def run_wrapped(self, **env: str) -> subprocess.CompletedProcess:
        """As the Command runs it: the wrap() line, by sh (the login shell), without sudo."""
        line = remote.wrap(kerberos.keytab_script(REALM, SEARCH), False, "search-keytab", 60)
        return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env={**self.env, **env}, timeout=60)


@pytest.fixture
def kdc(tmp_path) -> FakeKdc:
    return FakeKdc(tmp_path)


def keytab_principals(encoded: str) -> list[str]:
    """The principals of a base64 keytab, and a check that every timestamp is zeroed."""
    data = base64.b64decode(encoded, validate=True)
    assert data[:2] == b"\x05\x02", "a version 0x0502 keytab"
    names, pos = [], 2
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        p = pos + 4
        (count,) = struct.unpack_from(">H", data, p)
        p += 2
        parts = []
        for _ in range(count + 1):
            (length,) = struct.unpack_from(">H", data, p)
            parts.append(data[p + 2:p + 2 + length].decode())
            p += 2 + length
        assert data[p + 4:p + 8] == b"\0\0\0\0", f"the timestamp of {parts} is zeroed"
        names.append("/".join(parts[1:]) + "@" + parts[0])
        pos += 4 + size
    return names


def test_keytab_script_prints_only_the_keytab_on_stdout(kdc):
    done = kdc.run()
    assert done.returncode == 0, done.stderr
    encoded = done.stdout.removesuffix("\n")
    assert encoded and "\n" not in encoded, f"stdout is the base64 alone, one line: {done.stdout!r}"
    assert keytab_principals(encoded) == SEARCH, "the keytab holds every principal, in order"
    assert sorted(kdc.stored()) == sorted([f"krbtgt/{REALM}@{REALM}", *SEARCH]), "the principals were created"
    for principal in SEARCH:
        assert f"created: {principal}" in done.stderr, f"progress for {principal} on stderr"
    assert encoded not in done.stderr, "the keytab never reaches stderr (the log)"
    again = kdc.run()
    assert again.returncode == 0 and again.stdout == done.stdout, "a re-run prints the same bytes"
    assert all(f"exists: {principal}" in again.stderr for principal in SEARCH), "a re-run creates nothing"
    wrapped = kdc.run_wrapped()
    assert (wrapped.returncode, wrapped.stdout) == (0, done.stdout), f"the same through the Command's line: {wrapped}"


@pytest.mark.parametrize(
    "setup, env, says",
    [
        ("no-krbtgt", {}, "is not served by the KDC database on this host"),
        ("", {"FAKE_GETPRINC_ERROR": "Cannot open DB2 database"}, "getprinc analytics-search/"),
        ("", {"FAKE_ADDPRINC_FAILS": "1"}, "addprinc analytics-search/"),
        ("", {"FAKE_SKIP_ADDPRINC": "HTTP/*"}, "missing from the exported keytab: HTTP/"),
        ("", {"FAKE_SKIP_ADDPRINC": "*"}, "ktadd wrote no keytab"),
        ("", {"FAKE_KTADD_GARBAGE": "1"}, "not a version 0x0502 keytab"),
        ("", {"FAKE_KLIST_FAILS": "1"}, "klist -k cannot read the exported keytab"),
        ("base64-fails", {}, ""),
    ],
    ids=["realm-not-served", "getprinc-fails", "addprinc-fails", "principal-missing-from-keytab",
         "no-keytab-written", "keytab-unreadable", "klist-fails", "base64-fails"],
)
def test_a_failing_keytab_script_prints_nothing_on_stdout(kdc, setup, env, says):
    if setup == "no-krbtgt":
        kdc.principals([])
    if setup == "base64-fails":
        kdc.base64_fails()
    for done in (kdc.run(**env), kdc.run_wrapped(**env)):
        assert done.returncode != 0, f"the script must fail: {done}"
        assert done.returncode not in remote.TIMED_OUT, f"a failure, not a time-out: {done}"
        assert done.stdout == "", f"stdout (the secret channel, in the error text) must be empty: {done.stdout!r}"
        assert says in done.stderr, f"the reason is on stderr: {done.stderr!r}"
        assert "BFAKEPARTIAL" not in done.stderr, "a partial keytab never reaches stderr"
    assert kdc.calls(), "the stand-in KDC was used"
