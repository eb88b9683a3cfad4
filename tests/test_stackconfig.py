"""Stack files are read as the Pulumi CLI reads them, strictly, and written as it writes them.

Every refusal is one line naming the file, the key and the line, never a traceback, and
never a secret value or a ciphertext.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_PASSPHRASE
from tools import passphrase as pp
from tools import stackconfig

ROOT = stackconfig.ROOT
FLEET = stackconfig.stacks()
SALT_LINE = (ROOT / "Pulumi.search.yaml").read_text().splitlines()[0]  # unlocks with EXAMPLE_PASSPHRASE
SALT = SALT_LINE.split(": ", 1)[1]
SENTINEL = "SENTINEL-secret-value-4f1c"


def crypter() -> pp.Crypter:
    return pp.crypter_from_salt(EXAMPLE_PASSPHRASE, SALT)  # derived key cached: fast


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


def write(root: Path, text: str | bytes, stack: str = "t") -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def refused(root: Path, text: str | bytes, passphrase: str | None = None) -> str:
    """The one-line StackError that reading ``text`` as Pulumi.t.yaml gives."""
    write(root, text)
    with pytest.raises(stackconfig.StackError) as err:
        stackconfig.load("t", passphrase, root)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("Pulumi.t.yaml: ")
    return message


def loaded(root: Path, text: str, passphrase: str | None = None) -> stackconfig.StackConfig:
    write(root, text)
    return stackconfig.load("t", passphrase, root)


# --- the committed fleet reads exactly as before ---------------------------------------------

def legacy_load(stack: str, passphrase: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """tools/stackconfig.py before issue 11 (PyYAML safe_load, no checks), kept as the reference."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    crypt = pp.crypter_from_salt(passphrase, doc["encryptionsalt"]) if passphrase is not None else None

    def plain(node):
        if isinstance(node, dict):
            if set(node) == {"secure"}:
                return (crypt.decrypt(node["secure"]) if crypt else "[secret]"), True
            items = {k: plain(v) for k, v in node.items()}
            return {k: v for k, (v, _) in items.items()}, any(s for _, s in items.values())
        if isinstance(node, list):
            items = [plain(v) for v in node]
            return [v for v, _ in items], any(s for _, s in items)
        return node, False

    def wire(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)

    merged = {}
    for key, spec in (project.get("config") or {}).items():
        full = key if ":" in key else f"{project['name']}:{key}"
        if isinstance(spec, dict) and ("default" in spec or "value" in spec or "type" in spec):
            if "value" in spec or "default" in spec:
                merged[full] = spec["value"] if "value" in spec else spec["default"]
        else:
            merged[full] = spec
    merged.update(doc.get("config") or {})
    config, secret = {}, []
    for key, value in merged.items():
        value, is_secret = plain(value)
        config[key] = wire(value)
        if is_secret:
            secret.append(key)
    return config, tuple(sorted(secret))


def test_the_fleet_holds_the_13_reference_stacks():
    from tests.test_fleet import REFERENCE_INSTANCES

    assert REFERENCE_INSTANCES <= set(FLEET)


@pytest.mark.parametrize("passphrase", [EXAMPLE_PASSPHRASE, None], ids=["decrypted", "placeholders"])
@pytest.mark.parametrize("stack", FLEET)
def test_committed_stack_gives_the_same_config_as_before(stack, passphrase):
    sc = stackconfig.load(stack, passphrase)
    assert (sc.config, sc.secret_keys) == legacy_load(stack, passphrase)
    assert sc.decrypted is (passphrase is not None)


def test_loading_a_stack_stays_fast():
    stackconfig.load("search", None)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        stackconfig.load("search", None)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.025, f"load('search') takes {statistics.median(times) * 1e3:.1f} ms"


# --- YAML as go-yaml v3 reads it ---------------------------------------------------------------

def test_duplicate_key_is_refused_naming_it_and_both_lines(root):
    message = refused(root, "config:\n  airflow:phase: database\n  airflow:instance: t\n  airflow:phase: complete\n")
    assert message == "Pulumi.t.yaml: config: duplicate key airflow:phase (first at line 2) (line 4)"


def test_duplicate_key_inside_an_object_is_refused(root):
    message = refused(root, "config:\n  airflow:legacy:\n    host: a\n    host: b\n")
    assert message == "Pulumi.t.yaml: airflow:legacy: duplicate key host (first at line 3) (line 4)"


def test_excessive_aliasing_is_refused_quickly(root):
    laughs = "config:\n  airflow:x:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level, prev in zip("bcdefghi", "abcdefgh"):
        laughs += f"    {level}: &{level} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    start = time.perf_counter()
    message = refused(root, laughs)
    assert time.perf_counter() - start < 1
    assert "excessive aliasing" in message and message.startswith("Pulumi.t.yaml: airflow:x.")


def test_long_strings_behind_aliases_count_towards_the_bound(root):
    big = "x" * 20_000
    text = f"config:\n  airflow:x:\n    a: &a {big}\n    b: [*a, *a, *a, *a, *a, *a]\n"
    assert "excessive aliasing" in refused(root, text)


def test_an_anchor_reused_a_few_times_is_accepted(root):
    sc = loaded(root, "config:\n  airflow:x:\n    a: &r {cpu: '1', memory: 1Gi}\n    b: *r\n")
    assert json.loads(sc.config["airflow:x"]) == {"a": {"cpu": "1", "memory": "1Gi"}, "b": {"cpu": "1", "memory": "1Gi"}}


def test_merge_keys_merge_like_the_cli_with_explicit_keys_winning(root):
    sc = loaded(root, "config:\n  airflow:x:\n    base: &b {a: 1, b: 2}\n    more:\n      <<: *b\n      b: 3\n")
    assert json.loads(sc.config["airflow:x"])["more"] == {"a": 1, "b": 3}


def test_alias_without_anchor_is_refused(root):
    message = refused(root, "config:\n  airflow:x: *nowhere\n")
    assert message == "Pulumi.t.yaml: airflow:x: the alias *nowhere has no anchor before it (or is inside its own anchor) (line 2)"


def test_recursive_alias_is_refused(root):
    assert "has no anchor before it (or is inside its own anchor)" in refused(root, "config:\n  airflow:x: &a [*a]\n")


def test_document_that_is_a_list_is_refused(root):
    assert refused(root, "- config\n- airflow:x\n") == "Pulumi.t.yaml: the file is a list, not a mapping with config: (line 1)"


def test_document_that_is_a_string_is_refused(root):
    assert refused(root, "config\n") == "Pulumi.t.yaml: the file is a string, not a mapping with config: (line 1)"


def test_empty_file_has_no_config(root):
    assert loaded(root, "# nothing yet\n").config["airflow:environment"] == "dse-k8s-eqiad"


def test_config_that_is_a_list_is_refused(root):
    message = refused(root, "config:\n  - airflow:phase\n")
    assert message == "Pulumi.t.yaml: config: is a list, not a mapping of airflow:<key> settings (line 1)"


def test_second_document_is_refused(root):
    assert refused(root, "config:\n  airflow:x: a\n---\nconfig: {}\n") == \
        "Pulumi.t.yaml: more than one YAML document (a second ---) (line 3)"


@pytest.mark.parametrize("key,kind", [("5", "a number"), ("true", "a boolean"), ("1.5", "a number"), ("null", "null")])
def test_key_that_is_not_a_string_is_refused(root, key, kind):
    message = refused(root, f"config:\n  airflow:x:\n    {key}: a\n")
    assert message.startswith("Pulumi.t.yaml: airflow:x: the key") and f"is {kind}, not a string; quote it (line 3)" in message


def test_top_level_config_key_that_is_not_a_string_is_refused(root):
    assert refused(root, "config:\n  5: a\n") == "Pulumi.t.yaml: config: the key 5 is a number, not a string; quote it (line 2)"


def test_key_that_is_a_list_is_refused(root):
    assert "a mapping key is a mapping or a list, not a string" in refused(root, "config:\n  ? [a, b]\n  : c\n")


@pytest.mark.parametrize("value", ["2024-01-01", "2024-01-01T10:00:00Z", "2001-12-14 21:59:43.10 -5"])
def test_date_values_are_refused_saying_to_quote_them(root, value):
    message = refused(root, f"config:\n  airflow:x:\n    since: {value}\n")
    assert message == ("Pulumi.t.yaml: airflow:x.since: an unquoted date or timestamp is a YAML timestamp, "
                       "not a JSON value; quote it (line 3)")


def test_date_directly_under_config_is_refused(root):
    assert "airflow:x: an unquoted date or timestamp" in refused(root, "config:\n  airflow:x: 2024-01-01\n")


def test_quoted_date_is_a_string(root):
    assert loaded(root, "config:\n  airflow:x:\n    since: '2024-01-01'\n").config["airflow:x"] == '{"since": "2024-01-01"}'


@pytest.mark.parametrize("value,name", [("!!binary aGVsbG8=", "a !!binary"), ("!!timestamp 2024-01-01", "a !!timestamp"),
                                        ("!!set {a, b}", "a !!set"), ("!!omap [a: 1]", "a !!omap"),
                                        ("!custom x", "a custom-tagged"), ("!!python/object:os.system x", "a !!python/object:os.system")])
def test_values_of_non_json_types_are_refused(root, value, name):
    message = refused(root, f"config:\n  airflow:x:\n    v: {value}\n")
    assert message.startswith(f"Pulumi.t.yaml: airflow:x.v: {name}") and "not a JSON value" in message
    assert message.endswith("(line 3)")


@pytest.mark.parametrize("value", [".inf", "-.Inf", ".nan"])
def test_infinity_and_nan_are_refused(root, value):
    assert "is not a JSON number; quote it (line 3)" in refused(root, f"config:\n  airflow:x:\n    v: {value}\n")


def test_integer_beyond_64_bits_is_refused(root):
    assert "beyond 64 bits; quote it" in refused(root, "config:\n  airflow:x:\n    v: 123456789012345678901234567890\n")


@pytest.mark.parametrize("word", ["yes", "No", "off", "ON", "y"])
def test_yaml_11_booleans_are_refused_as_values(root, word):
    message = refused(root, f"config:\n  airflow:geoip: {word}\n")
    assert message == (f"Pulumi.t.yaml: airflow:geoip: an unquoted {word} is a boolean to YAML 1.1 readers but a "
                       "string to Pulumi; write true or false, or quote it (line 2)")


def test_yaml_11_boolean_is_refused_as_a_key(root):
    assert "an unquoted on is a boolean" in refused(root, "config:\n  airflow:x:\n    on: a\n")


def test_quoted_yaml_11_boolean_is_a_string(root):
    assert loaded(root, "config:\n  airflow:x: 'off'\n").config["airflow:x"] == "off"


@pytest.mark.parametrize("value", ["0755", "1_000", "1:30", "0b101"])
def test_numbers_yaml_readers_disagree_on_are_refused(root, value):
    message = refused(root, f"config:\n  airflow:x:\n    v: {value}\n")
    assert message.startswith("Pulumi.t.yaml: airflow:x.v: an unquoted") and "quote it" in message


def test_nesting_deeper_than_the_bound_is_refused(root):
    message = refused(root, "config:\n  airflow:x: " + "[" * 40 + "]" * 40 + "\n")
    assert message.endswith(f"nested deeper than {stackconfig.MAX_DEPTH} levels (line 2)")
    assert message.startswith("Pulumi.t.yaml: airflow:x[0]")


def test_extremely_deep_nesting_is_one_line(root):
    assert "(line 2)" in refused(root, "config:\n  airflow:x: " + "[" * 100_000 + "]" * 100_000 + "\n")


def test_nesting_within_the_bound_is_accepted(root):
    depth = stackconfig.MAX_DEPTH - 3  # the document and config: are two levels, airflow:x's list one more
    sc = loaded(root, "config:\n  airflow:x: " + "[" * depth + "1" + "]" * depth + "\n")
    assert sc.config["airflow:x"] == "[" * depth + "1" + "]" * depth


def test_tab_indentation_is_one_line_with_its_line(root):
    assert refused(root, "config:\n  airflow:instance: t\n\tairflow:phase: database\n") == \
        "Pulumi.t.yaml: not valid YAML: a tab character where YAML allows only spaces (line 3)"


def test_invalid_yaml_is_one_line_with_its_line(root):
    message = refused(root, "config:\n  airflow:x: [a, b\n  airflow:y: c\n")
    assert message.startswith("Pulumi.t.yaml: not valid YAML: ") and message.endswith(")")
    assert "(line " in message


def test_bytes_that_are_not_utf8_are_one_line_with_their_line(root):
    assert refused(root, b"config:\n  airflow:instance: t\n  airflow:x: caf\xe9\n") == "Pulumi.t.yaml: not UTF-8 text (line 3)"


def test_control_character_is_one_line_with_its_line(root):
    assert refused(root, "config:\n  airflow:instance: t\x00\n") == \
        "Pulumi.t.yaml: not valid YAML: the character U+0000 is not allowed in YAML text (line 2)"


def test_utf8_byte_order_mark_is_accepted(root):
    assert loaded(root, "\ufeffconfig:\n  airflow:phase: database\n").config["airflow:phase"] == "database"


def test_unknown_top_level_key_is_refused_with_a_hint(root):
    assert refused(root, "confg:\n  airflow:phase: database\n") == (
        "Pulumi.t.yaml: top-level key confg is not a stack-file setting (only encryptionsalt and config); "
        "did you mean config? (line 1)")


def test_other_secrets_providers_are_refused(root):
    message = refused(root, "secretsprovider: awskms://alias/x\nconfig: {}\n")
    assert message.startswith("Pulumi.t.yaml: secretsprovider: this program reads only stacks of the passphrase")
    assert "awskms" not in message


def test_key_without_a_value_is_refused(root):
    assert refused(root, "config:\n  airflow:imageVersion:\n") == \
        "Pulumi.t.yaml: airflow:imageVersion has no value; give one or delete the line (line 2)"


def test_key_control_characters_are_escaped_in_the_message(root):
    message = refused(root, 'config:\n  "airflow:x\\ny": a\n  "air\\nflow:x": b\n')
    assert "'air\\nflow:x'" in message


# --- values as the CLI hands them to the program ------------------------------------------------

@pytest.mark.parametrize("text", ["1.50", "0x1F", "True", "1e3", "007-x", "+5"])
def test_scalar_under_config_reaches_the_program_as_written(root, text):
    # pulumi/pulumi config.Value decodes a scalar into a string first: the text as written
    assert loaded(root, f"config:\n  airflow:x: {text}\n").config["airflow:x"] == text


@pytest.mark.parametrize("value", ["a string", "", "true", "0755", "- not a list", "multi\nline\n", "ünïcødé",
                                   42, -7, 0, True, False, 1.5, 2.0e-3,
                                   ["a", 1, True, None, 1.25], {"a": {"b": [1, "2", False]}, "c": None}, [], {}])
def test_values_of_every_type_round_trip_as_the_cli_stores_them(root, value):
    # what `pulumi config set [--path]` writes (go-yaml quotes strings that would read otherwise)
    write(root, yaml.safe_dump({"config": {"airflow:x": value}}, allow_unicode=True))
    assert stackconfig.load("t", None, root).config["airflow:x"] == stackconfig._to_wire(value)


@pytest.mark.parametrize("value", ["s3cr3t", "true", "12", "{\"a\": 1}", "line one\nline two", "  padded  ", "ünïcødé: x"])
def test_secret_round_trips_through_set_secret_and_load(root, value):
    write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    stackconfig.set_secret("t", "fernetKey", value, EXAMPLE_PASSPHRASE, root)
    sc = stackconfig.load("t", EXAMPLE_PASSPHRASE, root)
    assert sc.config["airflow:fernetKey"] == value and "airflow:fernetKey" in sc.secret_keys


# --- the project namespace ------------------------------------------------------------------------

def test_key_without_namespace_is_refused_with_a_hint(root):
    assert refused(root, "config:\n  phase: database\n") == \
        "Pulumi.t.yaml: config key phase has no namespace; did you mean airflow:phase? (line 2)"


@pytest.mark.parametrize("namespace", ["airflw", "Airflow", "airflows", "aiflow"])
def test_misspelled_namespace_is_refused_with_a_hint(root, namespace):
    assert refused(root, f"config:\n  airflow:instance: t\n  {namespace}:phase: database\n") == \
        f"Pulumi.t.yaml: config key {namespace}:phase is not in the project namespace; did you mean airflow:phase? (line 3)"


@pytest.mark.parametrize("key", ["pulumi:foo", "kubernetes:context", "aws:region", "pulumi:disable-default-providers"])
def test_provider_and_engine_keys_are_refused(root, key):
    message = refused(root, f"config:\n  {key}: x\n")
    assert message == (f"Pulumi.t.yaml: config key {key} is outside the project namespace: the program reads only "
                       "airflow:<key> settings (it documents no provider configuration) (line 2)")


def test_old_config_form_of_a_key_is_refused_with_its_new_form(root):
    assert refused(root, "config:\n  airflow:config:phase: database\n") == \
        "Pulumi.t.yaml: config key airflow:config:phase is the old <namespace>:config:<name> form; write airflow:phase (line 2)"


def test_key_with_empty_name_is_refused(root):
    assert "config key airflow: has no name" in refused(root, "config:\n  'airflow:': x\n")


# --- secrets --------------------------------------------------------------------------------------

def test_secure_value_nested_in_an_object_makes_the_whole_key_secret(root):
    ct = crypter().encrypt(SENTINEL)
    sc = loaded(root, f"{SALT_LINE}\nconfig:\n  airflow:x:\n    user: bob\n    password:\n      secure: {ct}\n",
                EXAMPLE_PASSPHRASE)
    assert sc.secret_keys == ("airflow:x",)
    assert json.loads(sc.config["airflow:x"]) == {"user": "bob", "password": SENTINEL}


def test_secure_value_inside_a_list_makes_the_whole_key_secret(root):
    ct = crypter().encrypt(SENTINEL)
    sc = loaded(root, f"{SALT_LINE}\nconfig:\n  airflow:x:\n    - plain\n    - secure: {ct}\n")
    assert sc.secret_keys == ("airflow:x",)
    assert json.loads(sc.config["airflow:x"]) == ["plain", "[secret]"]


def test_flow_style_secure_value_is_a_secret(root):
    ct = crypter().encrypt(SENTINEL)
    sc = loaded(root, f"{SALT_LINE}\nconfig:\n  airflow:fernetKey: {{secure: {ct}}}\n", EXAMPLE_PASSPHRASE)
    assert sc.config["airflow:fernetKey"] == SENTINEL and sc.secret_keys == ("airflow:fernetKey",)


GOOD_CT = "v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
MALFORMED_SECURE = {
    "null": ("", "its secure: value is empty"),
    "number": ("12345", "its secure: value is a number"),
    "mapping": ("{v1: x}", "its secure: value is a mapping"),
    "list": ("[v1, x]", "its secure: value is a list"),
    "bad-base64": ("v1:AAAA!AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not a v1:<nonce>:<ciphertext> string"),
    "short-nonce": ("v1:AAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not a v1:<nonce>:<ciphertext> string"),
    "no-version": ("AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not a v1:<nonce>:<ciphertext> string"),
    "non-ascii": ("v1:AAAAAAAAAAAAAAAé:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not a v1:<nonce>:<ciphertext> string"),
}


@pytest.mark.parametrize("passphrase", [None, EXAMPLE_PASSPHRASE], ids=["placeholders", "decrypted"])
@pytest.mark.parametrize("case", MALFORMED_SECURE, ids=list(MALFORMED_SECURE))
def test_malformed_secure_value_is_one_line_naming_the_key_without_the_value(root, case, passphrase):
    value, reason = MALFORMED_SECURE[case]
    message = refused(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n  airflow:fernetKey:\n    secure: {value}\n",
                      passphrase)
    assert message.startswith("Pulumi.t.yaml: airflow:fernetKey: ") and reason in message
    assert message.endswith("(line 4)")
    if value:
        assert value not in message


def test_ciphertext_that_does_not_decrypt_is_one_line_without_it(root):
    ct = crypter().encrypt(SENTINEL)
    broken = ct[:-6] + ("AAAAAA" if not ct.endswith("AAAAAA") else "BBBBBB")
    message = refused(root, f"{SALT_LINE}\nconfig:\n  airflow:x:\n    nested:\n      secure: {broken}\n", EXAMPLE_PASSPHRASE)
    assert message == "Pulumi.t.yaml: airflow:x: cannot decrypt: wrong passphrase or corrupted value (line 3)"


def test_refusal_after_a_decrypted_secret_does_not_show_it(root):
    ct = crypter().encrypt(SENTINEL)
    message = refused(root, f"{SALT_LINE}\nconfig:\n  airflow:fernetKey:\n    secure: {ct}\n  airflow:x:\n    secure: 5\n",
                      EXAMPLE_PASSPHRASE)
    assert SENTINEL not in message and ct not in message and ct.split(":")[2] not in message


MALFORMED_SALT = {
    "number": "5",
    "null": "",
    "mapping": "{v1: x}",
    "bad-format": "v1:c2FsdA==:AAAA",
    "bad-base64": "v1:!!!!:v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "non-ascii": "v1:c2FsdMOp:v1:AAAAAAAAAAAAAAAé:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
}


@pytest.mark.parametrize("passphrase", [None, EXAMPLE_PASSPHRASE], ids=["placeholders", "decrypted"])
@pytest.mark.parametrize("case", MALFORMED_SALT, ids=list(MALFORMED_SALT))
def test_malformed_encryptionsalt_is_one_line_without_the_value(root, case, passphrase):
    value = MALFORMED_SALT[case]
    message = refused(root, f"config:\n  airflow:instance: t\nencryptionsalt: {value}\n", passphrase)
    assert message.startswith("Pulumi.t.yaml: encryptionsalt is ") and message.endswith("(line 3)")
    if len(value) > 2:
        assert value not in message


def test_passphrase_file_with_invalid_bytes_is_one_line(tmp_path):
    path = tmp_path / "passphrase"
    path.write_bytes(b"\xff\xfeexamples\n")
    with pytest.raises(pp.PassphraseError) as err:
        pp.passphrase_from_env({"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)})
    assert str(err.value) == "PULUMI_CONFIG_PASSPHRASE_FILE: not UTF-8 text"


def test_missing_passphrase_file_is_one_line(tmp_path):
    with pytest.raises(pp.PassphraseError) as err:
        pp.passphrase_from_env({"PULUMI_CONFIG_PASSPHRASE_FILE": str(tmp_path / "none")})
    assert str(err.value) == "PULUMI_CONFIG_PASSPHRASE_FILE: cannot read it (No such file or directory)"


def test_salt_with_bad_base64_is_a_passphrase_error_not_a_traceback():
    with pytest.raises(pp.PassphraseError):
        pp.crypter_from_salt("pw", "v1:!!!!:v1:AAAA:AAAA")


# --- the writer -----------------------------------------------------------------------------------

def stack_text(root: Path, stack: str = "t") -> str:
    return (root / f"Pulumi.{stack}.yaml").read_text()


def test_config_line_with_a_comment_gets_no_second_config(root):
    write(root, f"{SALT_LINE}\n# the instance\nconfig: # settings of t\n  airflow:instance: t\n")
    stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    text = stack_text(root)
    assert text.count("config:") == 1 and "config: # settings of t" in text and "# the instance" in text
    sc = stackconfig.load("t", EXAMPLE_PASSPHRASE, root)
    assert sc.config["airflow:instance"] == "t" and sc.config["airflow:fernetKey"] == SENTINEL


def test_encryptionsalt_after_config_stays_parsable(root):
    write(root, f"config:\n  airflow:instance: t\n{SALT_LINE}\n")
    stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    text = stack_text(root)
    assert text.count("encryptionsalt:") == 1 and text.rstrip().endswith(SALT_LINE)
    assert stackconfig.load("t", EXAMPLE_PASSPHRASE, root).config["airflow:fernetKey"] == SENTINEL


def test_flow_style_secure_value_is_replaced_in_its_style(root):
    old = crypter().encrypt("old value")
    write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n  airflow:fernetKey: {{secure: {old}}}  # rotated yearly\n")
    stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    text = stack_text(root)
    assert old not in text and "  airflow:fernetKey: {secure: v1:" in text and "# rotated yearly" in text
    assert stackconfig.load("t", EXAMPLE_PASSPHRASE, root).config["airflow:fernetKey"] == SENTINEL


def test_file_without_salt_gets_one_first(root):
    write(root, "# keep me\nconfig:\n  airflow:instance: t\n")
    stackconfig.set_secret("t", "fernetKey", "first", "pw", root)
    text = stack_text(root)
    assert text.startswith("# keep me\nencryptionsalt: v1:") and text.count("encryptionsalt:") == 1
    assert stackconfig.load("t", "pw", root).config["airflow:fernetKey"] == "first"


@pytest.mark.parametrize("text", ["", "config:\n", "config: # later\n", "config: {}\n"])
def test_secret_goes_into_an_empty_or_missing_config(root, text):
    write(root, f"{SALT_LINE}\n{text}")
    stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    assert stack_text(root).count("config:") == 1
    assert stackconfig.load("t", EXAMPLE_PASSPHRASE, root).config["airflow:fernetKey"] == SENTINEL


@pytest.mark.parametrize("stack", FLEET)
def test_committed_stack_keeps_comments_order_and_values_when_a_secret_is_set(root, stack):
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", root)
    before_text = stack_text(root, stack)
    before = stackconfig.load(stack, EXAMPLE_PASSPHRASE, root)
    stackconfig.set_secret(stack, "oidcClientSecret", SENTINEL, EXAMPLE_PASSPHRASE, root)
    stackconfig.set_secret(stack, "newSecret", "another", EXAMPLE_PASSPHRASE, root)
    after_text = stack_text(root, stack)
    after = stackconfig.load(stack, EXAMPLE_PASSPHRASE, root)
    comments = lambda text: [ln.strip() for ln in text.splitlines() if ln.strip().startswith("#")]  # noqa: E731
    assert comments(after_text) == comments(before_text)
    keys = lambda text: [k for k in yaml.safe_load(text)["config"]]  # noqa: E731
    assert keys(after_text) == keys(before_text) + ["airflow:newSecret"]
    expected = dict(before.config, **{"airflow:oidcClientSecret": SENTINEL, "airflow:newSecret": "another"})
    assert after.config == expected
    changed = sum(1 for a, b in zip(before_text.splitlines(), after_text.splitlines()) if a != b)
    assert changed <= 8, f"{changed} lines of Pulumi.{stack}.yaml changed"


def test_empty_secret_is_refused_and_the_file_untouched(root):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    before = path.read_bytes()
    for value in ("", "\n", "   "):
        with pytest.raises(stackconfig.StackError, match=r"^airflow:fernetKey: the secret is empty"):
            stackconfig.set_secret("t", "fernetKey", value, EXAMPLE_PASSPHRASE, root)
    assert path.read_bytes() == before


def test_plain_value_is_not_replaced_by_a_secret(root):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:fernetKey: {SENTINEL}\n")
    with pytest.raises(stackconfig.StackError) as err:
        stackconfig.set_secret("t", "fernetKey", "x", EXAMPLE_PASSPHRASE, root)
    assert str(err.value) == "airflow:fernetKey is set in plain text in Pulumi.t.yaml; delete that entry first"
    assert SENTINEL in path.read_text()


def test_broken_stack_file_is_refused_by_the_writer_and_left_untouched(root):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:phase: a\n  airflow:phase: b\n")
    before = path.read_bytes()
    with pytest.raises(stackconfig.StackError, match="duplicate key airflow:phase"):
        stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    assert path.read_bytes() == before


def test_writer_refuses_a_key_outside_the_namespace(root):
    write(root, f"{SALT_LINE}\nconfig: {{}}\n")
    with pytest.raises(stackconfig.StackError, match=r"kubernetes:token is outside the project namespace"):
        stackconfig.set_secret("t", "kubernetes:token", SENTINEL, EXAMPLE_PASSPHRASE, root)


def test_write_is_atomic_and_keeps_the_file_mode(root):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    os.chmod(path, 0o600)
    stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in root.iterdir()) == ["Pulumi.t.yaml", "Pulumi.yaml"]  # no temp file left


def test_failed_write_leaves_the_file_and_no_temp_file(root, monkeypatch):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stackconfig.os, "replace", failing_replace)
    with pytest.raises(OSError):
        stackconfig.set_secret("t", "fernetKey", SENTINEL, EXAMPLE_PASSPHRASE, root)
    assert path.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["Pulumi.t.yaml", "Pulumi.yaml"]


# --- the command ----------------------------------------------------------------------------------

def run_main(root: Path, monkeypatch, argv: list[str], stdin: bytes, env: dict[str, str] | None = None):
    monkeypatch.setattr(stackconfig, "ROOT", root)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    for name, value in (env if env is not None else {"PULUMI_CONFIG_PASSPHRASE": EXAMPLE_PASSPHRASE}).items():
        monkeypatch.setenv(name, value)
    stdin_stream = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    err = io.StringIO()
    code = stackconfig.main(argv, stdin=stdin_stream, stderr=err)
    return code, err.getvalue()


def test_cli_reads_the_secret_from_stdin_without_its_final_newline(root, monkeypatch):
    write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], SENTINEL.encode() + b"\n")
    assert (code, err) == (0, "")
    assert stackconfig.load("t", EXAMPLE_PASSPHRASE, root).config["airflow:fernetKey"] == SENTINEL


@pytest.mark.parametrize("stdin", [b"", b"\n", b"\r\n"], ids=["empty", "newline", "crlf"])
def test_cli_refuses_an_empty_secret_with_exit_2_and_leaves_the_file(root, monkeypatch, stdin):
    path = write(root, f"{SALT_LINE}\nconfig:\n  airflow:instance: t\n")
    before = path.read_bytes()
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], stdin)
    assert code == 2
    assert err == "error: airflow:fernetKey: the secret is empty; give its value on standard input (the file is unchanged)\n"
    assert path.read_bytes() == before


def test_cli_unknown_stack_is_one_line_and_exit_2(root, monkeypatch):
    write(root, "config: {}\n")
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "nosuch", "fernetKey"], b"x")
    assert code == 2 and err == "error: unknown stack 'nosuch': no Pulumi.nosuch.yaml (known stacks: t)\n"


def test_cli_secret_that_is_not_utf8_is_one_line(root, monkeypatch):
    path = write(root, f"{SALT_LINE}\nconfig: {{}}\n")
    before = path.read_bytes()
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], b"\xff\xfe")
    assert code == 2 and err == "error: the secret on standard input is not UTF-8 text (the file is unchanged)\n"
    assert path.read_bytes() == before


def test_cli_passphrase_file_with_invalid_bytes_is_one_line(root, monkeypatch, tmp_path_factory):
    secret_file = tmp_path_factory.mktemp("pp") / "passphrase"
    secret_file.write_bytes(b"\xffbad")
    write(root, f"{SALT_LINE}\nconfig: {{}}\n")
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], b"x",
                         env={"PULUMI_CONFIG_PASSPHRASE_FILE": str(secret_file)})
    assert code == 2 and err == "error: PULUMI_CONFIG_PASSPHRASE_FILE: not UTF-8 text\n"


def test_cli_without_a_passphrase_is_one_line(root, monkeypatch):
    write(root, "config: {}\n")
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], b"x", env={})
    assert code == 2 and err == "error: set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE\n"


def test_cli_wrong_passphrase_is_one_line(root, monkeypatch):
    write(root, f"{SALT_LINE}\nconfig: {{}}\n")
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], SENTINEL.encode(),
                         env={"PULUMI_CONFIG_PASSPHRASE": "wrong"})
    assert code == 2 and err == "error: Pulumi.t.yaml: incorrect passphrase (PULUMI_CONFIG_PASSPHRASE)\n"


def test_cli_usage_error_is_one_line_and_exit_2(root, monkeypatch):
    code, err = run_main(root, monkeypatch, ["set-secret", "fernetKey"], b"x")
    assert (code, err) == (2, "error: python -m tools.stackconfig set-secret: the following arguments are required: "
                              "-s/--stack (see python -m tools.stackconfig set-secret --help)\n")


def test_cli_internal_error_is_one_line_saying_it_is_a_bug_without_the_secret(root, monkeypatch):
    write(root, f"{SALT_LINE}\nconfig: {{}}\n")

    def broken(stack, key, value, passphrase, root):
        raise KeyError(value)

    monkeypatch.setattr(stackconfig, "set_secret", broken)
    code, err = run_main(root, monkeypatch, ["set-secret", "-s", "t", "fernetKey"], SENTINEL.encode())
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: internal error (a bug, please report it): KeyError")
    assert err.endswith("; rerun with --debug for the traceback\n")
    assert "Traceback" not in err and SENTINEL not in err


def test_cli_internal_error_shows_the_traceback_with_debug(root, monkeypatch):
    write(root, f"{SALT_LINE}\nconfig: {{}}\n")
    monkeypatch.setattr(stackconfig, "set_secret", lambda *a, **k: 1 / 0)
    code, err = run_main(root, monkeypatch, ["set-secret", "--debug", "-s", "t", "fernetKey"], b"x")
    assert code == 1 and err.startswith("Traceback") and "ZeroDivisionError" in err


@pytest.mark.processes
def test_cli_runs_as_a_module_under_the_guard(root):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    proc = subprocess.run([sys.executable, "-m", "tools.stackconfig", "set-secret", "-s", "nosuch", "fernetKey"],
                          cwd=ROOT, env=env, input=b"x", capture_output=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().startswith("error: unknown stack 'nosuch'") and proc.stderr.count(b"\n") == 1
