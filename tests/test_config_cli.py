"""`./dev config`, the offline twin of `pulumi config` (tools/stackconfig.py), and the error
hints that name it: every refusal is one line, exit 2, the stack file byte-for-byte untouched;
every hint names the fixing command in both spellings with `-s STACK`, never a secret value."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import config_errors
from components.config_errors import ConfigError
from tests.conftest import EXAMPLE_PASSPHRASE, run_stack
from tools import passphrase as pp
from tools import stackconfig

ROOT = stackconfig.ROOT
SENTINEL = "SENTINEL-oidc-secret-7d2e"
CORPUS = yaml.safe_load((Path(__file__).parent / "bad_inputs" / "corpus.yaml").read_text())


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    """A repository root of its own: Pulumi.yaml, the canary's stack and search's."""
    for name in ("Pulumi.yaml", "Pulumi.test-k8s.yaml", "Pulumi.search.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.setattr(stackconfig, "ROOT", tmp_path)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", EXAMPLE_PASSPHRASE)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    # every stack `init` makes here gets one fixed salt instead of tools.passphrase.new_salt's
    # random one: its PBKDF2 key (0.2 s) is derived once for the module, not once per test (these
    # tests are about the file and the messages; the salt's format is still checked below)
    new_salt = pp.new_salt
    monkeypatch.setattr(pp, "new_salt", lambda passphrase, salt=None: new_salt(passphrase, FIXED_SALT if salt is None else salt))
    return tmp_path


FIXED_SALT = b"cfg-cli!"


def dev_config(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = stackconfig.main(list(argv), stdin=io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def refused(root: Path, stack: str, *argv: str, stdin: bytes = b"") -> str:
    """Run a command that must fail: exit 2, one line, the file byte-for-byte as before."""
    path = root / f"Pulumi.{stack}.yaml"
    before = path.read_bytes() if path.exists() else None
    code, out, err = dev_config(*argv, stdin=stdin)
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert out == ""
    assert (path.read_bytes() if path.exists() else None) == before, "the stack file changed"
    assert not list(root.glob(".*.tmp")), "a temp file was left"
    return err


def text(root: Path, stack: str = "new") -> str:
    return (root / f"Pulumi.{stack}.yaml").read_text()


# --- init ------------------------------------------------------------------------------------

def test_init_writes_a_passphrase_salt_and_the_instance_as_the_cli_does(root):
    code, _, err = dev_config("init", "-s", "new")
    assert code == 0, err
    lines = text(root).splitlines()
    assert lines[1:] == ["config:", "  airflow:instance: new"]
    salt = lines[0].removeprefix("encryptionsalt: ")
    assert re.fullmatch(r"v1:[A-Za-z0-9+/]{11}=:v1:[A-Za-z0-9+/]{16}:[A-Za-z0-9+/=]+", salt), salt
    pp.crypter_from_salt(EXAMPLE_PASSPHRASE, salt)  # unlocks with the passphrase
    with pytest.raises(pp.PassphraseError):
        pp.crypter_from_salt("another passphrase", salt)
    assert stackconfig.load("new", EXAMPLE_PASSPHRASE, root).config["airflow:instance"] == "new"


def test_init_refuses_an_existing_stack(root):
    assert "already exists" in refused(root, "search", "init", "-s", "search")


@pytest.mark.parametrize("name", ["New", "a_b", "x" * 40, "x-"])
def test_init_refuses_a_name_the_program_would_refuse_as_instance(root, name):
    assert "airflow:instance" in refused(root, name, "init", "-s", name)
    assert not (root / f"Pulumi.{name}.yaml").exists()


def test_init_without_a_passphrase_writes_nothing(root, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    assert "PULUMI_CONFIG_PASSPHRASE" in refused(root, "new", "init", "-s", "new")
    assert not (root / "Pulumi.new.yaml").exists()


# --- set ---------------------------------------------------------------------------------------

@pytest.fixture
def new(root) -> Path:
    assert dev_config("init", "-s", "new")[0] == 0
    return root


@pytest.mark.parametrize(("key", "value", "line", "wire"), [
    ("geoip", "true", "  airflow:geoip: true", "true"),
    ("airflow:pgInstances", "3", "  airflow:pgInstances: 3", "3"),
    ("pgStorageSize", "20Gi", "  airflow:pgStorageSize: 20Gi", "20Gi"),
    ("opLdapRole", "yes", '  airflow:opLdapRole: "yes"', "yes"),  # go-yaml quotes a YAML 1.1 boolean
    ("extraFqdns", '["airflow-new.wikimedia.org"]', "  airflow:extraFqdns:\n    - airflow-new.wikimedia.org",
     '["airflow-new.wikimedia.org"]'),
    ("namespaceLabels", '{"team": "data"}', "  airflow:namespaceLabels:\n    team: data", '{"team": "data"}'),
])
def test_set_writes_the_value_in_the_keys_type_and_the_program_reads_it(new, key, value, line, wire):
    code, _, err = dev_config("set", "-s", "new", key, value)
    assert code == 0, err
    assert text(new).endswith(line + "\n")
    full = key if ":" in key else f"airflow:{key}"
    assert stackconfig.load("new", None, new).config[full] == wire


def test_set_with_and_without_the_prefix_write_the_same(new):
    dev_config("set", "-s", "new", "airflow:pgStorageSize", "20Gi")
    first = text(new)
    dev_config("set", "-s", "new", "pgStorageSize", "21Gi")
    assert text(new) == first.replace("20Gi", "21Gi")


def test_set_replaces_a_value_in_place(new):
    dev_config("set", "-s", "new", "pgInstances", "3")
    dev_config("set", "-s", "new", "geoip", "true")
    dev_config("set", "-s", "new", "pgInstances", "4")
    assert text(new).splitlines()[2:] == ["  airflow:instance: new", "  airflow:pgInstances: 4", "  airflow:geoip: true"]


def test_set_of_an_unknown_key_is_refused(new):
    err = refused(new, "new", "set", "-s", "new", "phse", "complete")
    assert err == "error: airflow:phse: unknown config key; did you mean airflow:phase? (nothing written)\n"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("releaseTimeoutSeconds", "5", "error: airflow:releaseTimeoutSeconds: 5 is outside 60..3600; pick a finite timeout such as 900\n"),
    ("geoip", "yes", "error: airflow:geoip: is not a boolean; use true or false\n"),
    ("extraFqdns", "[not json", None),
    ("kdcHost", "krb1001", None),
    ("legacy", '{"host": "an-airflow1005.eqiad.wmnet", "dbhost": "x"}', None),
])
def test_a_value_the_program_refuses_is_refused_with_the_programs_message(new, key, value, message):
    err = refused(new, "new", "set", "-s", "new", key, value)
    assert err.startswith(f"error: airflow:{key}"), err
    if message is not None:
        assert err == message


def test_the_program_message_is_the_one_the_preview_gives(new):
    err = refused(new, "new", "set", "-s", "new", "kdcHost", "krb1001")
    run = run_stack("search", overrides={"kdcHost": "krb1001"})
    assert err == f"error: {run.error}\n"


def test_a_change_that_leaves_another_key_wanting_is_written_with_a_note(root):
    code, _, err = dev_config("set", "-s", "search", "phase", "database")
    assert code == 0
    assert err.startswith("note: airflow:legacyDbPassword: missing: phase database connects to the legacy database; "
                          "set it with `./dev config set --secret -s search legacyDbPassword`")
    assert "airflow:phase: database" in text(root, "search")


def test_a_secret_key_is_never_set_in_plain_text(new):
    err = refused(new, "new", "set", "-s", "new", "oidcClientSecret", SENTINEL)
    assert "`./dev config set --secret -s new oidcClientSecret`" in err and SENTINEL not in err


def test_a_plain_key_is_never_set_as_a_secret(new):
    err = refused(new, "new", "set", "--secret", "-s", "new", "phase", stdin=b"complete")
    assert "is not a secret" in err


def test_a_secret_value_on_the_command_line_is_refused_without_echoing_it(new):
    err = refused(new, "new", "set", "--secret", "-s", "new", "oidcClientSecret", SENTINEL)
    assert SENTINEL not in err and "never goes on the command line" in err


def test_set_secret_reads_stdin_and_get_decrypts_it_with_the_passphrase(new, monkeypatch):
    code, _, err = dev_config("set", "--secret", "-s", "new", "oidcClientSecret", stdin=SENTINEL.encode() + b"\n")
    assert code == 0, err
    assert SENTINEL not in text(new) and "  airflow:oidcClientSecret:\n    secure: v1:" in text(new)
    assert dev_config("get", "-s", "new", "oidcClientSecret")[:2] == (0, SENTINEL + "\n")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    passphrase_file = new / "passphrase"
    passphrase_file.write_text(EXAMPLE_PASSPHRASE + "\n")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(passphrase_file))
    assert dev_config("get", "-s", "new", "oidcClientSecret")[:2] == (0, SENTINEL + "\n")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE")
    code, out, err = dev_config("get", "-s", "new", "oidcClientSecret")
    assert (code, out) == (2, "") and "PULUMI_CONFIG_PASSPHRASE" in err and SENTINEL not in err


def test_set_secret_with_a_wrong_passphrase_is_refused(new, monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "wrong")
    assert "incorrect passphrase" in refused(new, "new", "set", "--secret", "-s", "new", "oidcClientSecret", stdin=b"x" * 8)


@pytest.mark.parametrize("stdin", [b"", b"\n", b"  \n"])
def test_an_empty_secret_is_refused(new, stdin):
    assert "the secret is empty" in refused(new, "new", "set", "--secret", "-s", "new", "oidcClientSecret", stdin=stdin)


def test_a_secret_the_program_refuses_is_refused_without_echoing_it(new):
    err = refused(new, "new", "set", "--secret", "-s", "new", "fernetKey", stdin=SENTINEL.encode())
    assert err.startswith("error: airflow:fernetKey: is not a Fernet key") and SENTINEL not in err


def test_get_prints_a_project_default_and_an_object_as_json(root):
    assert dev_config("get", "-s", "search", "airflow:environment")[:2] == (0, "dse-k8s-eqiad\n")
    code, out, _ = dev_config("get", "-s", "search", "legacy")
    assert code == 0 and yaml.safe_load(text(root, "search"))["config"]["airflow:legacy"] == __import__("json").loads(out)


def test_get_of_a_key_not_set_is_one_line(root):
    code, out, err = dev_config("get", "-s", "search", "legacyDbPassword")
    assert (code, out) == (2, "") and err == "error: configuration key 'airflow:legacyDbPassword' not found for stack 'search'\n"


# --- keeping the file as it was --------------------------------------------------------------

def comments(source: str) -> list[str]:
    return [ln.strip() for ln in source.splitlines() if ln.strip().startswith("#")]


def test_replacing_an_object_keeps_every_comment_and_the_key_order(root):
    before = text(root, "search")
    keys = list(yaml.safe_load(before)["config"])
    code, _, err = dev_config("set", "-s", "search", "legacy", '{"host": "an-airflow1006.eqiad.wmnet", '
                              '"hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaQlgHMVkTqY0HnPm1i8y5/TKASgAzqhyhQwFNnQYnU", '
                              '"dbHost": "an-db1001.eqiad.wmnet", "dbName": "airflow_search", "dbUser": "airflow_search"}')
    assert code == 0, err
    after = text(root, "search")
    assert list(yaml.safe_load(after)["config"]) == keys
    # the comment inside the old value goes with it; every other comment stays where it was
    inside = "# EXAMPLE value (a well-formed key of no real host): pin the real key from `ssh-keyscan -t ed25519 an-airflow1005.eqiad.wmnet`"
    assert comments(after) == [c for c in comments(before) if c != inside]
    assert stackconfig.load("search", EXAMPLE_PASSPHRASE, root).config["airflow:legacy"].count("an-airflow1006") == 1
    unchanged = before.split("  airflow:legacy:")[0]
    assert after.startswith(unchanged)


def test_rm_removes_the_key_with_its_head_comment_only(root):
    before = text(root, "search")
    code, _, err = dev_config("rm", "-s", "search", "airflow:extraValues")
    assert code == 0, err
    after = text(root, "search")
    assert "airflow:extraValues" not in after and "extra_secrets" not in after
    assert not [c for c in comments(after) if "values-production.yaml@66ce6e0b5" in c], "the key's head comment goes with it"
    assert [c for c in comments(after) if "Migrated from the legacy VM" in c], "the next key's comment stays"
    assert list(yaml.safe_load(after)["config"]) == [k for k in yaml.safe_load(before)["config"] if k != "airflow:extraValues"]


def test_rm_of_a_key_not_set_changes_nothing_and_a_misspelt_one_is_refused(root):
    before = text(root, "search")
    assert dev_config("rm", "-s", "search", "geoip")[0] == 0
    assert text(root, "search") == before
    assert "unknown config key" in refused(root, "search", "rm", "-s", "search", "geoipp")


def test_rm_that_the_program_would_refuse_is_refused(root):
    assert refused(root, "search", "rm", "-s", "search", "oidcClientSecret").startswith("error: airflow:oidcClientSecret: missing")


def test_unknown_stack_is_one_line(root):
    err = refused(root, "nosuch", "set", "-s", "nosuch", "geoip", "true")
    assert err.startswith("error: unknown stack 'nosuch'")


@pytest.mark.processes
def test_dev_config_runs_the_command_under_the_guard():
    proc = subprocess.run([str(ROOT / "dev"), "config", "get", "-s", "nosuch", "phase"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown stack 'nosuch'") and proc.stderr.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "tools.stackconfig", "get", "-s", "search", "phase"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "complete\n")


# --- hints: the fixing command in both spellings, with the stack ----------------------------

_COMMAND = re.compile(r"`(\./dev config|pulumi config) (set|rm|get)( --secret)? -s ([^\s`]+) ([^\s`]+)((?: [^`]+)?)`")


def _commands(fix: str) -> list[tuple[str, str, bool, str, str, str]]:
    return [(m[1], m[2], bool(m[3]), m[4], m[5], m[6].strip()) for m in _COMMAND.finditer(fix)]


def test_a_hint_is_built_in_both_spellings_and_never_with_a_secret_value():
    fix = config_errors.set_fix("search", "oidcClientSecret", secret=True)
    assert fix == ("set it with `./dev config set --secret -s search oidcClientSecret` "
                   "(CLI: `pulumi config set --secret -s search oidcClientSecret`)")
    with pytest.raises(ValueError):
        config_errors.config_command("set", "search", "oidcClientSecret", value="x", secret=True)


def _corpus_errors():
    for case in CORPUS:
        run = run_stack(case["stack"], overrides=case.get("set"), drop=tuple(case.get("drop", ())),
                        secret_overrides=case.get("secret"))
        yield case, run.error


def test_every_corpus_hint_naming_a_config_command_names_it_in_both_spellings_with_the_stack():
    from components.config_keys import KEYS

    named = 0
    for case, error in _corpus_errors():
        assert isinstance(error, ConfigError), f"{case['name']}: {error!r}"
        if not re.search(r"config (set|rm|get)", error.fix):
            continue
        named += 1
        found = _commands(error.fix)
        assert found, f"{case['name']}: a config command outside the helper's spelling: {error.fix}"
        offline = [c[1:] for c in found if c[0] == "./dev config"]
        cli = [c[1:] for c in found if c[0] == "pulumi config"]
        assert offline and offline == cli, f"{case['name']}: not in both spellings: {error.fix}"
        for verb, secret, stack, key, rest in offline:
            assert stack == case["stack"], f"{case['name']}: -s {stack}, not -s {case['stack']}"
            spec = KEYS.get(key)
            if spec is not None and spec.secret and verb == "set":
                assert secret and rest in ("", "< keyfile"), f"{case['name']}: a secret with a value on the command line: {error.fix}"
        for value in (case.get("secret") or {}).values():
            assert value == case["stack"] or value not in str(error), f"{case['name']}: the secret is shown"
    assert named >= 8, f"only {named} corpus errors name a config command"


@pytest.mark.parametrize(("stack", "drop", "secret", "set_", "command"), [
    ("search", ("oidcClientSecret",), {}, {}, "set --secret -s search oidcClientSecret"),
    ("test-k8s", ("sshPrivateKey",), {}, {}, "set --secret -s test-k8s sshPrivateKey"),
    ("search", (), {"legacyDbPassword": "leftover-password"}, {}, "rm -s search legacyDbPassword"),
    ("search", (), {}, {"phase": "database"}, "set --secret -s search legacyDbPassword"),
    ("search", (), {}, {"canaryStack": "search"}, "rm -s search canaryStack"),
    ("search", (), {}, {"instanceName": "x"}, "rm -s search instanceName"),
    ("search", (), {}, {"fernetKey": "plain"}, "rm -s search fernetKey"),
    ("search", (), {"airflowS3AccessKey": "A" * 20}, {}, "set --secret -s search airflowS3SecretKey"),
])
def test_hints_of_the_program_name_the_command_with_the_stack(stack, drop, secret, set_, command):
    run = run_stack(stack, overrides=set_, drop=drop, secret_overrides=secret)
    assert isinstance(run.error, ConfigError)
    assert f"`./dev config {command}" in run.error.fix and f"`pulumi config {command}" in run.error.fix, run.error.fix


def test_no_config_hint_is_spelled_by_hand():
    # every `... config set/rm/get` of an error hint comes from config_errors.config_command
    sources = sorted((ROOT / "components").glob("config*.py"))
    for path in sources:
        if path.name == "config_errors.py":
            continue
        found = re.findall(r"(?:pulumi|\./dev) config (?:set|rm|get)[^\n]*", path.read_text())
        code_lines = [f for f in found if not f.lstrip().startswith("#")]
        assert not [f for f in code_lines if '"' in f or "'" in f], f"{path.name}: {code_lines}"


# --- set --path: one element of a plain list or object, as `pulumi config set --path` ---

def test_set_path_appends_one_history_line_and_keeps_the_others(root):
    before = text(root, "test-k8s")
    assert "  airflow:chartHistory:\n" in before, "the canary's file has a chart history to append to"
    rc, _, err = dev_config("set", "--path", "-s", "test-k8s", "chartHistory[2]", "0.0.150")
    assert rc == 0, err
    after = text(root, "test-k8s")
    assert after.count("\n") == before.count("\n") + 1 and "    - 0.0.150\n" in after, after
    rc, out, err = dev_config("get", "-s", "test-k8s", "chartHistory")
    assert rc == 0 and out.strip().endswith('"0.0.150"]'), (out, err)


def test_set_path_sets_one_field_of_an_object(root):
    rc, _, err = dev_config("set", "--path", "-s", "search", "legacy.logsDir", "/srv/airflow-search/logs2")
    assert rc == 0, err
    rc, out, _ = dev_config("get", "-s", "search", "legacy")
    assert '"logsDir":"/srv/airflow-search/logs2"' in out and '"host":' in out, out


@pytest.mark.parametrize("argv, says", [
    (("chartHistory[9]", "0.0.150"), "past the end"),
    (("chartHistory.x", "0.0.150"), "not an object"),
    (("chartHistory[x]", "0.0.150"), "cannot read the path"),
    (("imageVersion[0]", "x"), "single value"),
    (("chartHistry[0]", "x"), "unknown config key"),
])
def test_set_path_refuses_what_it_cannot_do_and_writes_nothing(root, argv, says):
    message = refused(root, "test-k8s", "set", "--path", "-s", "test-k8s", *argv)
    assert says in message, message


def test_set_path_never_takes_a_secret(root):
    message = refused(root, "search", "set", "--secret", "--path", "-s", "search", "legacy.host", stdin=b"x\n")
    assert "--path" in message, message
