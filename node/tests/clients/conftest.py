"""Fixtures for the real-client tests: every test starts its own broker(s) on free ports
with fresh data dirs, and every broker is killed when the test ends, pass or fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from broker import Broker, tansu_bin  # noqa: E402
from helpers import forget_admins  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if tansu_bin() is None:
        return
    skip = pytest.mark.skip(reason="gregor_only: running against a reference broker")
    for item in items:
        if "gregor_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def broker_factory(tmp_path, request):
    """`broker_factory(config=None, **kw)` starts a broker; all are killed at teardown.
    `config` is a dict of Kafka-named broker keys, written to a TOML file for --config."""
    started: list[Broker] = []

    def start(config: dict | None = None, **kw) -> Broker:
        b = Broker(tmp_path / f"broker{len(started)}", config=config, **kw)
        started.append(b)
        return b.start()

    yield start
    forget_admins()
    failed = getattr(request.node, "rep_call", None)
    for b in started:
        b.kill()
        if failed is not None and failed.failed:
            print(f"\n{b.log_tail()}", file=sys.stderr)


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
