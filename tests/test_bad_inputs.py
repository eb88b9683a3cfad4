"""The bad-input corpus (tests/bad_inputs/corpus.yaml): every malformed config is rejected
with one line naming the key, exit 2, no traceback, and zero resources registered."""

import io
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_stack
from tools import mockrun, preview, stackconfig

CORPUS = yaml.safe_load((Path(__file__).parent / "bad_inputs" / "corpus.yaml").read_text())


def test_the_corpus_is_big_enough_and_covers_every_class():
    assert len(CORPUS) >= 150
    assert len({c["name"] for c in CORPUS}) == len(CORPUS), "case names must be unique"
    classes = {}
    for case in CORPUS:
        classes[case.get("class", "original")] = classes.get(case.get("class", "original"), 0) + 1
    # the mechanisms of issue 11: look-alike values, endpoints/paths, managed values, secrets, canary
    assert {"lookalike", "endpoint-path", "managed", "secret", "canary"} <= set(classes), classes


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_bad_input_is_rejected_in_one_line_before_any_resource(case, monkeypatch):
    run = run_stack(case["stack"], overrides=case.get("set"), drop=tuple(case.get("drop", ())), secret_overrides=case.get("secret"))
    assert run.error is not None, f"{case['name']}: accepted"
    assert run.monitor.registered() == [], f"{case['name']}: resources registered before the error"

    # the same through the preview command: exit 2, one line, no traceback
    original = stackconfig.load

    def patched(stack, passphrase, root=stackconfig.ROOT):
        sc = original(stack, "examples-only-not-a-secret", root)
        config = dict(sc.config)
        secret_keys = list(sc.secret_keys)
        for key in case.get("drop", ()):
            config.pop(f"airflow:{key}", None)
            if f"airflow:{key}" in secret_keys:
                secret_keys.remove(f"airflow:{key}")
        for key, value in (case.get("set") or {}).items():
            config[f"airflow:{key}"] = stackconfig._to_wire(value)
        for key, value in (case.get("secret") or {}).items():
            config[f"airflow:{key}"] = value
            secret_keys.append(f"airflow:{key}")
        return stackconfig.StackConfig(sc.project, sc.stack, config, tuple(secret_keys), True)

    monkeypatch.setattr(stackconfig, "load", patched)
    out, err = io.StringIO(), io.StringIO()
    code = preview.main(["-s", case["stack"]], stdout=out, stderr=err)
    message = err.getvalue()
    assert code == 2, f"{case['name']}: exit {code}"
    assert message.count("\n") == 1, f"{case['name']}: not one line: {message!r}"
    assert "Traceback" not in message and out.getvalue() == ""
    assert message.startswith(f"error: {case['expect']}: "), f"{case['name']}: {message!r}"
    for value in (case.get("secret") or {}).values():
        assert value not in message, f"{case['name']}: the secret value is echoed"
