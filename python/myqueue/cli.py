"""The ``myqueue`` command: topics, produce, consume and lag from the shell.

    myqueue topics
    myqueue create NAME
    seq 1000 | myqueue produce NAME
    myqueue consume NAME --group printer --follow

A broker started with ``--auth-file`` needs a token in env ``MYQUEUE_TOKEN``; over HTTPS
(``--broker https://host:port``) env ``MYQUEUE_CA_FILE`` names the CA to trust, if not the
system's. Every command takes ``--broker HOST:PORT`` (or env ``MYQUEUE_BROKER``; default
``localhost:9092``) and ``--json``. Errors are one line on stderr and an exit status: 2 for a
usage error, 1 for a request the broker refused or a broker that cannot be reached. This module
parses the arguments and dispatches; ``_stream`` moves messages, ``_admin`` makes the one-shot
HTTP calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, NoReturn

from myqueue import _stream
from myqueue._admin import DEFAULT_BROKER, Admin, GroupLag, Unsupported
from myqueue._exit import FAILED, INTERRUPTED, USAGE, CliError
from myqueue._native import MyQueueError

# Broker error codes that mean the command's arguments were wrong (exit status 2).
USAGE_CODES = frozenset({"invalid_topic_name"})


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (and a pointer to ``--help``)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)", USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns its exit status (the console script exits with it)."""
    name = "this command"
    try:
        args = _parser().parse_args(argv)
        name = args.command
        broker = args.broker or os.environ.get("MYQUEUE_BROKER") or DEFAULT_BROKER
        command: Callable[[argparse.Namespace, str], int] = args.run
        return command(args, broker)
    except CliError as err:
        return _fail(str(err), err.status)
    except Unsupported:
        return _fail(f"this broker does not support {name} yet", FAILED)
    except MyQueueError as err:
        # A name the broker finds malformed is a bad argument, as when the client finds it.
        code = getattr(err, "code", None)  # set on every error a broker answer caused
        return _fail(str(err), USAGE if code in USAGE_CODES else FAILED)
    except ValueError as err:  # a malformed --broker, topic or group name
        return _fail(str(err), USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`myqueue consume t | head`): not an error. Point stdout at
        # /dev/null so that the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as err:
        return _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err), FAILED)
    except Exception as err:  # noqa: BLE001 -- a bug or an unexpected answer: one line still
        return _fail(f"unexpected error: {type(err).__name__}: {err}", FAILED)


def _fail(message: str, status: int) -> int:
    text = " ".join(message.split())  # one line, whatever the message holds
    prefix = "" if text.startswith("myqueue") else "myqueue: "
    print(prefix + text, file=sys.stderr)
    return status


# --------------------------------------------------------------------------------------------
# The commands that are one request (or one per topic)
# --------------------------------------------------------------------------------------------


def _topics(args: argparse.Namespace, broker: str) -> int:
    names = Admin(broker).topics()
    if args.json:
        _print(json.dumps(names))
    else:
        for name in names:
            _print(name)
    return 0


def _create(args: argparse.Namespace, broker: str) -> int:
    message = Admin(broker).create_topic(args.name)
    _print(json.dumps({"topic": args.name, "created": True}) if args.json else message)
    return 0


def _describe(args: argparse.Namespace, broker: str) -> int:
    body = Admin(broker).describe_topic(args.name)
    if args.json:
        _print(json.dumps(body))
        return 0
    for key in ("name", "start_offset", "end_offset", "messages", "bytes"):
        _print(f"{key}: {_cell(body[key])}")
    in_force = body["retention"]
    for key, unit in (("ms", "retention_ms"), ("bytes", "retention_bytes")):
        value = in_force[key]
        shown = "unlimited" if value is None else str(value)
        whose = "the broker's default" if body[unit] is None else "this topic's"
        _print(f"{unit}: {shown} ({whose})")
    _print(f"created_ms: {body['created_ms']}")
    consumers = body["consumers"]
    if not consumers:
        _print("consumers: []")
        return 0
    _print("consumers:")
    columns = ["consumer_id", "group", "position", "lag"]
    _table(columns, [[c[column] for column in columns] for c in consumers], "  ")
    return 0


def _delete(args: argparse.Namespace, broker: str) -> int:
    message = Admin(broker).delete_topic(args.name)
    if args.json:
        _print(json.dumps({"topic": args.name, "deleted": True, "message": message}))
    else:
        _print(message)
    return 0


def _lag(args: argparse.Namespace, broker: str) -> int:
    admin = Admin(broker)
    topics: list[str] = args.topics or admin.topics()
    try:
        rows = [row for topic in topics for row in _described_lag(admin, topic, args.group)]
    except Unsupported:
        # This broker cannot list a topic's consumers yet: only a named group can be asked.
        if not args.group:
            raise CliError(
                "this broker cannot list consumers yet (it has no GET /topics/NAME): "
                "name a group with --group G to see its lag"
            ) from None
        print(
            "myqueue: this broker cannot list consumers: showing group "
            f"'{args.group}' only (anonymous consumers and other groups are not shown)",
            file=sys.stderr,
        )
        rows = [_lag_row(admin.group_lag(topic, args.group)) for topic in topics]
    if args.json:
        _print(json.dumps(rows))
    else:
        columns = ["topic", "consumer", "position", "end", "lag"]
        _table([c.upper() for c in columns], [[row[c] for c in columns] for row in rows])
    return 0


def _lag_row(lag: GroupLag) -> dict[str, Any]:
    return {
        "topic": lag.topic,
        "consumer": lag.group,
        "position": lag.position,
        "end": lag.end,
        "lag": lag.lag,
    }


def _described_lag(admin: Admin, topic: str, group: str | None) -> list[dict[str, Any]]:
    """Rows from ``GET /topics/{name}``'s consumer list (a group, or ``#id`` if anonymous)."""
    body = admin.describe_topic(topic)
    start, end = body["start_offset"], body["end_offset"]
    rows = []
    for consumer in body["consumers"]:
        if group is not None and consumer["group"] != group:
            continue
        rows.append(
            {
                "topic": topic,
                "consumer": consumer["group"] or f"#{consumer['consumer_id']}",
                # Where it continues: a position before the start (retention removed what
                # was there) continues from the start, as the broker's lag counts.
                "position": max(consumer["position"], start),
                "end": end,
                "lag": consumer["lag"],
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _print(line: str) -> None:
    sys.stdout.buffer.write(line.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _table(header: list[str], rows: list[list[Any]], indent: str = "") -> None:
    """Plain aligned columns (no colour, no box drawing): easy to read, easy to `awk`."""
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        _print(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="myqueue",
        description="The myqueue command: list, create, produce to, consume from and watch the "
        "topics of a myqueue broker.",
        epilog="Exit status: 0 success, 1 a request the broker refused or a broker that cannot "
        "be reached, 2 a usage error.",
    )
    _common(parser, None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace, str], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, argparse.SUPPRESS)
        sub.set_defaults(run=run, command=name)
        return sub

    command("topics", _topics, "List the topics, one per line.")
    sub = command("create", _create, "Create a topic.")
    sub.add_argument("name", metavar="NAME")
    sub = command("describe", _describe, "Show a topic: offsets, size, retention, consumers.")
    sub.add_argument("name", metavar="NAME")
    sub = command("delete", _delete, "Delete a topic with its messages and registrations.")
    sub.add_argument("name", metavar="NAME")

    sub = command(
        "produce",
        _stream.produce,
        "Send lines from stdin (or --file) to TOPIC, one message per line; report the count "
        "and rate on stderr at the end.",
    )
    sub.add_argument("topic", metavar="TOPIC")
    sub.add_argument("--file", metavar="PATH", help="read this file instead of stdin")

    sub = command(
        "consume",
        _stream.consume,
        "Print the messages of one or more topics (taken in turn), one per line. Without "
        "--follow it stops once it has printed what the topics held when it started.",
    )
    sub.add_argument("topics", metavar="TOPIC", nargs="+")
    sub.add_argument(
        "--group",
        "-g",
        metavar="G",
        help="a durable consumer group: a later run with the same group continues after the "
        "last message this one printed",
    )
    start = sub.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", action="store_true", help="start at each topic's first message"
    )
    start.add_argument(
        "--from-end", action="store_true", help="skip what the topics hold now (with --follow)"
    )
    sub.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep waiting for new messages, like tail -f; Ctrl-C stops (and commits what was "
        "printed)",
    )
    sub.add_argument("--max", type=_positive, metavar="N", help="stop after N messages")

    sub = command(
        "lag",
        _lag,
        "A table of topics, consumers and their lag (messages not consumed yet).",
    )
    sub.add_argument("topics", metavar="TOPIC", nargs="*", help="these topics only")
    sub.add_argument(
        "--group",
        "-g",
        metavar="G",
        help="this consumer group only (on a broker that cannot list consumers, the group is "
        "registered on each topic to ask for its position, which creates it if it was new)",
    )
    return parser


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options every command takes, before or after its name."""
    parser.add_argument(
        "--broker",
        "-b",
        metavar="HOST:PORT",
        default=default,
        help=f"the broker (default: env MYQUEUE_BROKER, else {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default, help="output JSON (one object per line)"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
