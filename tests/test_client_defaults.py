"""The client's defaults are defined once (in the Rust core) and every other place agrees:
the constructors' parameters, ``PRODUCER_DEFAULTS`` / ``CONSUMER_DEFAULTS``, and the README.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import pytest
from conftest import ROOT

import myqueue
from myqueue import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, MyConsumer, MyProducer

# Keys that are not constructor parameters, and parameters whose default is "none given".
NOT_PARAMETERS = {"stop_timeout"}
NO_VALUE = {"topics", "group", "start", "token", "ca_file"}


@pytest.mark.parametrize(
    ("cls", "defaults"), [(MyProducer, PRODUCER_DEFAULTS), (MyConsumer, CONSUMER_DEFAULTS)]
)
def test_every_default_names_a_parameter_and_every_option_has_one(cls, defaults):
    parameters = set(inspect.signature(cls).parameters) - NO_VALUE
    assert set(defaults) - NOT_PARAMETERS == parameters


def readme_defaults(name: str) -> dict[str, Any]:
    """The keyword defaults of the ``name(...)`` signature the README shows."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^{name}\(.*?\)$", readme, re.MULTILINE | re.DOTALL)
    assert match, f"the README shows no {name}(...) signature"
    # `*` is not an expression: drop it, and read the call's keyword arguments.
    call = ast.parse(match.group(0).replace(" *,", ""), mode="eval").body
    assert isinstance(call, ast.Call)
    return {
        kw.arg: eval(compile(ast.Expression(kw.value), "README", "eval"), {})
        for kw in call.keywords
    }


@pytest.mark.parametrize(
    ("name", "defaults"), [("MyProducer", PRODUCER_DEFAULTS), ("MyConsumer", CONSUMER_DEFAULTS)]
)
def test_the_readme_shows_the_defaults(name, defaults):
    shown = {k: v for k, v in readme_defaults(name).items() if k not in NO_VALUE}
    assert shown == {k: v for k, v in defaults.items() if k not in NOT_PARAMETERS}


def test_the_fetch_limits_are_the_brokers_and_checked_before_any_request():
    # As the README documents them; the check is the broker's own (myqueue-wire).
    assert myqueue.MAX_FETCH_MESSAGES == 10_000
    assert myqueue.MAX_FETCH_BYTES == 16 * 1024 * 1024
    nobody = "127.0.0.1:9"  # never contacted: the options are refused first
    for option, limit in [
        ("fetch_max_messages", myqueue.MAX_FETCH_MESSAGES),
        ("fetch_max_bytes", myqueue.MAX_FETCH_BYTES),
    ]:
        for bad in (0, limit + 1):
            with pytest.raises(ValueError, match=f"^{option} must be between 1 and {limit}$"):
                MyConsumer(["t"], nobody, **{option: bad})
