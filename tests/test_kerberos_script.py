"""The Kerberos keytab step as text: the scripts, their quoting, and the Command around them.

tests/integration/test_kerberos_kdc.py runs the same text against a real KDC.
Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pulumi
import pytest
import pulumi_command as command
from pulumi.runtime import mocks as pm

from components import kerberos
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
    assert script.rstrip().endswith('base64 -w0 "$keytab"'), "the last word on stdout is base64 -w0"
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


def test_delete_script_deletes_nothing():
    script = kerberos.delete_script(REALM, SEARCH)
    code = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert code[-1].startswith("printf ") and code[-1].endswith(" >&2"), "the only command prints to stderr"
    assert code[:-1] == ["set -euo pipefail", "umask 077"], f"nothing but the header and printf: {code}"
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


def render_keytab(use_sudo: bool = True):
    created: dict[str, object] = {}

    def program():
        keytab = kerberos.KerberosKeytab(
            "search",
            kerberos.KerberosKeytabArgs(
                realm=REALM,
                principals=SEARCH,
                conn=command.remote.ConnectionArgs(host="krb1001.eqiad.wmnet", user="deploy",
                                                   private_key=pulumi.Output.secret("KEY"), host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaQlgHMVkTqY0HnPm1i8y5/TKASgAzqhyhQwFNnQYnU"),
                use_sudo=use_sudo,
                timeout_minutes=7,
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
    assert cmd.inputs["logging"] == "none", "the Command logs nothing"
    assert cmd.custom_timeouts == {"create": "7m", "update": "7m", "delete": "7m"}, "timeouts"


def test_component_runs_the_keytab_script_through_sudo():
    cmd = render_keytab().one("command:remote:Command")
    script = kerberos.keytab_script(REALM, SEARCH)
    assert cmd.inputs["create"] == f"sudo -n /bin/bash -c {shlex.quote(script)} search-keytab", "create"
    assert shlex.quote(kerberos.delete_script(REALM, SEARCH)) in cmd.inputs["delete"], "delete is the no-op"
    assert "stdin" not in cmd.inputs, "the keytab script takes nothing on stdin"


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
