"""`auction-timer`: one entry point for the worker, the gateway, the demo, replay and watch.

Settings come from AUCTION_TIMER_* environment variables (see `auction-timer settings`),
read once here and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence

from app.logs import configure_logging
from app.settings import Settings, describe
from streams.errors import AuctionTimerError


def cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    for env, default, doc in describe():
        print(f"{env:44} default {default!r:34} {doc}")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from app.worker import build_worker_app, faust_worker
    from streams.topic_admin import ensure_topics

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    replication = asyncio.run(ensure_topics(settings.topic_plan()))
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    # Fewer, cheaper collections: the worker allocates many short-lived objects per event, and
    # a young-generation threshold of 700 would collect every few hundred messages. A full
    # collection still comes every 5 million allocations, so cyclic garbage cannot pile up.
    gc.set_threshold(50_000, 10, 10)
    app, _ = build_worker_app(settings, replication)
    faust_worker(app, settings.log_level).execute_from_commandline()
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from app.gateway.server import run
    from streams.topic_admin import ensure_topics

    try:
        asyncio.run(ensure_topics(settings.topic_plan()))
    except AuctionTimerError as exc:
        # The gateway serves from Redis while Kafka is away; the feed reconnects by itself.
        logging.getLogger("auction_timer.gateway").warning("starting without Kafka: %s", exc)
    run(settings)
    return 0


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from app.client.watch import watch

    if bool(args.auction_ids) == args.all:
        print("auction-timer watch: name one or more auctions, or --all", file=sys.stderr)
        return 2
    base = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    try:
        return asyncio.run(watch(base, args.auction_ids, all_running=args.all))
    except KeyboardInterrupt:
        return 130


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from app.replay_cmd import run

    return asyncio.run(run(settings, args))


def cmd_acls(settings: Settings, args: argparse.Namespace) -> int:
    from app.acls import Principals, create_acls, kafka_acls_commands, service_acls

    who = Principals(args.worker, args.gateway, args.offers, args.bids, args.replay)
    acls = service_acls(who, settings.app_id)
    if args.apply:
        asyncio.run(create_acls(acls, settings.kafka_bootstrap, **settings.kafka_client_options()))
        print(f"created {len(acls)} ACLs (those that existed are unchanged)", file=sys.stderr)
    else:
        print("\n".join(kafka_acls_commands(acls, settings.kafka_bootstrap, args.command_config)))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from app.demo import run

    return run(settings, args.duration)


COMMANDS: dict[str, tuple[Callable[[Settings, argparse.Namespace], int], str]] = {
    "gateway": (cmd_gateway, "serve REST, WebSocket updates and the countdown page"),
    "worker": (cmd_worker, "run a Faust worker: fold the input topics, schedule deadlines and ticks"),
    "demo": (cmd_demo, "start Kafka, Redis, a worker, a gateway and synthetic auctions until Ctrl-C"),
    "replay": (cmd_replay, "rebuild timelines or the projection from the topics, or verify the live state"),
    "watch": (cmd_watch, "show auctions' live countdowns in the terminal (one connection), or a board of all running"),
    "acls": (cmd_acls, "print the Kafka ACLs each principal needs as kafka-acls commands, or --apply them"),
    "settings": (cmd_settings, "list every AUCTION_TIMER_* variable with its default"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="auction-timer",
        description="Event-sourced auction timer. Settings: AUCTION_TIMER_* variables (`auction-timer settings`).",
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "replay":
            from app.replay_cmd import add_arguments

            add_arguments(p)
        if name == "acls":
            add_acl_arguments(p)
        if name == "demo":
            p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
        if name == "watch":
            p.add_argument("auction_ids", nargs="*", metavar="AUCTION", help="the auctions to follow, until they end")
            p.add_argument("--all", action="store_true", help="a board of every running auction, until Ctrl-C")
            p.add_argument("--url", help="gateway base URL (default: from AUCTION_TIMER_GATEWAY_HOST/PORT)")
    return top


def add_acl_arguments(parser: argparse.ArgumentParser) -> None:
    from app.acls import Principals

    defaults = Principals()
    for role, does in (("worker", "runs `auction-timer worker`"), ("gateway", "runs `auction-timer gateway`"),
                       ("offers", "registers and cancels auctions"), ("bids", "places bids"),
                       ("replay", "runs `auction-timer replay`")):  # fmt: skip
        parser.add_argument(f"--{role}", default=getattr(defaults, role), help=f"the SCRAM user that {does}")
    parser.add_argument("--command-config", default="admin.properties", help="kafka-acls.sh client config to print")
    parser.add_argument(
        "--apply", action="store_true", help="create them through Kafka as the configured (admin) principal"
    )


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if env is None else env)
        configure_logging(settings.log_level)
        return COMMANDS[args.command][0](settings, args)
    except AuctionTimerError as exc:
        print(f"auction-timer {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
