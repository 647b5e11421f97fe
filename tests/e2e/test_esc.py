"""The stacks' secret config as Pulumi ESC projects it, evaluated by ESC's own evaluator (tests/e2e/esc.py).

Every e2e stack gets its secrets this way (tests/e2e/engine.py `open_engine`); these tests hold the
definitions in esc/ to what the program needs, and a broken definition to one line naming it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from components.settings.secrets import SECRET_SPECS
from render.stack import ESC_DIR, load_stack, stack_names
from tests.e2e.engine import open_engine
from tests.e2e.esc import EscError, esc_config, stand_ins


def _plain(stack: str) -> dict[str, str]:
    config = load_stack(stack)
    return {key: value for key, value in config.config.items() if key not in config.secret_keys}


def _copy(tmp_path: Path) -> Path:
    """The definitions in a folder of the test's own, to break one."""
    definitions = tmp_path / "esc"
    shutil.copytree(ESC_DIR, definitions)
    return definitions


@pytest.mark.parametrize("stack", stack_names())
def test_each_stack_gets_exactly_the_secrets_the_program_needs_from_esc_each_one_secret(bins: Path, stack: str) -> None:
    config = load_stack(stack)
    projection = esc_config(bins, stack, _plain(stack))
    # The backup bucket's keys are the optional secrets: needed exactly when the stack has backups
    # (components/settings/stack.py `_check_backup_keys`).
    has_backups = "backups" in yaml.safe_load(config.config[f"{config.project}:cluster"])
    needed = {f"{config.project}:{spec.key.value}" for spec in SECRET_SPECS if has_backups or not spec.optional}
    assert set(projection) == needed
    given = stand_ins()
    for key, (value, secret) in projection.items():
        assert secret, f"{key} reaches the program as a plain value"
        assert value == given[key.partition(":")[2]], f"{key} is not the value set in ESC"


def test_a_value_set_in_esc_reaches_the_program_unchanged(bins: Path) -> None:
    # What a test's own secret (the lead's whole-program test passes a real SSH key) goes through.
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        'b3BlbnNzaC1rZXktdjEAAAAA: "quoted" {braces} ${dollar} #hash\n'
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    projection = esc_config(bins, "production", _plain("production"), values=stand_ins() | {"sshPrivateKey": key})
    assert projection["sophia-infra:sshPrivateKey"] == (key, True)


def test_a_definition_that_does_not_evaluate_fails_with_one_line_naming_its_file_and_place(
    bins: Path, tmp_path: Path
) -> None:
    definitions = _copy(tmp_path)
    file = definitions / "sophia-ai-production.yaml"
    text = file.read_text()
    broken = text.replace("fn::secret: replace-with-the-openai-api-key", "fn::join: [openai]")
    assert broken != text
    file.write_text(broken)
    line = 1 + broken[: broken.index("fn::join")].count("\n")
    with pytest.raises(EscError) as failure:
        esc_config(bins, "production", _plain("production"), definitions=definitions)
    message = str(failure.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"error: {file}:{line}:"), message
    assert "fn::join" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("lacks", "pulumiConfig.openaiApiKey: is required; it comes from the ESC environment"),
        ("plain", "pulumiConfig.openaiApiKey: must be a secret"),
    ],
)
def test_a_definition_that_lacks_a_secret_the_program_needs_fails_with_one_line_naming_file_and_key(
    bins: Path, tmp_path: Path, change: str, expected: str
) -> None:
    definitions = _copy(tmp_path)
    file = definitions / "sophia-ai-production.yaml"
    text = file.read_text()
    entry = "    openaiApiKey:\n      fn::secret: replace-with-the-openai-api-key\n"
    assert entry in text
    replacement = "" if change == "lacks" else "    openaiApiKey: a-plain-openai-api-key-in-the-definition\n"
    file.write_text(text.replace(entry, replacement))
    with pytest.raises(EscError) as failure:
        esc_config(bins, "production", _plain("production"), definitions=definitions)
    message = str(failure.value)
    assert message == f"error: {file}: {expected}" or (
        len(message.splitlines()) == 1 and message.startswith(f"error: {file}: {expected}")
    ), message


def test_every_e2e_stack_takes_its_secrets_from_the_esc_projection(bins: Path, tmp_path: Path) -> None:
    # open_engine is how every e2e stack is made: its secret config is what ESC projects, secrets
    # secret, and the test's own value (the whole-program test's real SSH key) goes through ESC too.
    key = "\n".join(
        [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAAgiven-by-the-test",
            "-----END OPENSSH PRIVATE KEY-----",
            "",
        ]
    )
    engine = open_engine(bins, tmp_path / "ok", lambda: None, [], secrets={"sshPrivateKey": key})
    config = engine.stack.get_all_config()
    projection = esc_config(bins, "production", _plain("production"), values=stand_ins() | {"sshPrivateKey": key})
    assert {k: (v.value, v.secret) for k, v in config.items() if k in projection} == projection
    assert engine.config.stand_ins["sophia-infra:sshPrivateKey"] == key
    # And a definition that does not evaluate stops it before the engine runs anything.
    definitions = _copy(tmp_path)
    file = definitions / "sophia-ai-production.yaml"
    file.write_text(file.read_text().replace("fn::secret: replace-with-the-qdrant-api-key", "fn::fromJSON: '{'"))
    with pytest.raises(EscError, match=r"^error: .*sophia-ai-production\.yaml:\d+:\d+: "):
        open_engine(bins, tmp_path / "broken", lambda: None, [], esc_definitions=definitions)
