"""Which extra a command needs (tools/extras.py): one line that says what to install."""

from __future__ import annotations

import pytest

from tools.extras import EXTRA_OF, MissingExtra, installed, require


def test_the_message_names_the_extras_once_and_the_pip_line() -> None:
    error = MissingExtra("fedge demo", ("tensorflow", "prometheus_client", "tqdm"))
    assert error.extras == ("author", "tools")  # fedge[tools] brings fedge[server] along
    assert str(error) == ("fedge demo needs fedge[author] and fedge[tools]: pip install "
                          "'fedge[author,tools]' (not installed: tensorflow, "
                          "prometheus_client, tqdm)")
    assert MissingExtra("x", ("prometheus_client",)).extras == ("server",)


def test_require_passes_when_installed_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("fedge test", "tensorflow", "matplotlib")  # the dev environment has every extra
    assert installed("numpy") and not installed("no_such_module_anywhere")
    monkeypatch.setitem(EXTRA_OF, "no_such_module_anywhere", "datasets")
    with pytest.raises(MissingExtra, match=r"^fedge test needs fedge\[datasets\]: pip install "
                       r"'fedge\[datasets\]' \(not installed: no_such_module_anywhere\)$"):
        require("fedge test", "tensorflow", "no_such_module_anywhere")
