"""``switchyard worker``: arguments and refusing to start without its AppRole."""

from __future__ import annotations

import argparse

import pytest

from workers import command


def test_worker_command_parses_its_options():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--connector", "slack", "--concurrency", "8", "--tenant-concurrency", "2",
                              "--retry-tier-delays", "0.2,0.5"])
    assert (args.connector, args.concurrency, args.tenant_concurrency) == ("slack", 8, 2)
    assert command._tier_delays(args.retry_tier_delays) == (0.2, 0.5)


def test_unknown_connector_is_refused():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--connector", "fax"])


def test_bad_tier_delays_are_refused():
    with pytest.raises(ValueError):
        command._tier_delays("1,2,3,4")
    with pytest.raises(ValueError):
        command._tier_delays("soon")
