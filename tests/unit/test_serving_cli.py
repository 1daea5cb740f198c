"""``flywheel serve``: settings overrides are validated like the YAML, before anything starts."""

from __future__ import annotations

import pytest

from mlflywheel.tools.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "max_batch_sise=3"], "max_batch_sise"),
    (["--set", "max_batch_size=0"], "max_batch_size"),
    (["--set", "unknown_entity=guess"], "unknown_entity"),
    (["--set", "max_batch_size"], "--set expects KEY=VALUE"),
])
def test_bad_settings_are_refused_with_the_key(argv, message, capsys):
    assert main(["serve", "--pipeline", "ctr", "--no-feast", *argv]) == 2
    assert message in capsys.readouterr().err
