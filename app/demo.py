"""`auction-timer demo`: Kafka, Redis, a worker and a gateway on this machine, with a synthetic
auction generator, until Ctrl-C or SIGTERM (or --duration). Everything started is stopped on
every way out: a signal during start-up, a failure, or a second signal while stopping (which
is noted and otherwise ignored, so the stop completes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from aiokafka import AIOKafkaProducer

from app.settings import Settings
from infra.kafka_server import KafkaCluster
from infra.ports import free_port
from infra.process import ServerProcess, gateway_feed_live, kill_children, wait_until
from infra.redis_server import RedisServer
from streams import events as ev
from streams import outputs
from streams.clock import wall_ms
from streams.tracing import new_traceparent

SOURCE = "urn:auction-timer:demo"
LIVE_AUCTIONS = 24  # enough to fill the catalogue page


def service_env(
    settings: Settings, kafka: KafkaCluster, redis: RedisServer, data_dir: Path, metrics_port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUCTION_TIMER_")}
    env.update(
        AUCTION_TIMER_KAFKA_BOOTSTRAP=kafka.bootstrap,
        AUCTION_TIMER_REDIS_URL=redis.url,
        AUCTION_TIMER_GATEWAY_HOST=settings.gateway_host,
        AUCTION_TIMER_GATEWAY_PORT=str(settings.gateway_port),
        AUCTION_TIMER_TICK_INTERVAL_S=str(settings.tick_interval_s),
        AUCTION_TIMER_DATA_DIR=str(data_dir),
        AUCTION_TIMER_LOG_LEVEL="WARNING",
        AUCTION_TIMER_WORKER_METRICS_PORT=str(metrics_port),
    )
    return env


async def generate(bootstrap: str, base_url: str, stop: asyncio.Event, rng: random.Random) -> None:
    """New auctions every few seconds; bids, some in the soft-close window; now and then a cancel."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    live: dict[str, int] = {}
    try:
        while not stop.is_set():
            now = wall_ms()
            if len(live) < LIVE_AUCTIONS and rng.random() < 0.5:
                auction_id = f"demo-{uuid.uuid4().hex[:6]}"
                ends = now + rng.randint(30, 150) * 1000
                policy = ev.Policy(soft_close_window_ms=15_000, extension_ms=10_000, max_extension_ms=120_000)
                await send(
                    producer, ev.AuctionStarted(auction_id, now, ends, policy, f"maker-{rng.randint(1, 9)}"), now
                )
                live[auction_id] = ends
                print(f"  new auction {auction_id}: {base_url}/auctions/{auction_id}", flush=True)
            for auction_id, ends in list(live.items()):
                if ends < now:
                    del live[auction_id]
                elif rng.random() < 0.15:
                    bid = ev.BidPlaced(auction_id, uuid.uuid4().hex[:8], f"bidder-{rng.randint(1, 50)}",
                                       f"{rng.randint(10, 900)}.00", now)  # fmt: skip
                    await send(producer, bid, now)
                elif rng.random() < 0.002:
                    await send(producer, ev.AuctionCancelled(auction_id, "withdrawn by the maker", "demo"), now)
                    del live[auction_id]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await producer.stop()


async def send(producer: AIOKafkaProducer, payload: ev.Payload, now: int) -> None:
    record = outputs.input_record(payload, uuid.uuid4().hex, now, new_traceparent(), SOURCE)
    await producer.send_and_wait(record.topic, record.value, key=record.key)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal arrived while the demo was starting."""


class Signals:
    """SIGINT, SIGTERM and SIGHUP for the demo's whole life. The first one stops the demo: it
    interrupts start-up (raising Interrupted) or, once the generator runs, ends it through
    `wake`. Any later one arrives while stopping and is only noted, so the stop completes."""

    def __init__(self) -> None:
        self.stopping = False
        self.wake: Callable[[], object] | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            print(f"\n{signal.Signals(signum).name}: already stopping, please wait ...", flush=True)
            return
        self.stopping = True
        if self.wake is None:
            raise Interrupted(signal.Signals(signum).name)
        self.wake()


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """`label ...`, then how long it took; on a terminal the seconds count up meanwhile (the
    servers' own start-up chatter stays in their logs)."""
    started = time.monotonic()
    tty = sys.stdout.isatty()
    done = threading.Event()

    def count_up() -> None:
        while not done.wait(1.0):
            print(f"\r{label} ... {time.monotonic() - started:.0f} s", end="", flush=True)

    print(f"{label} ...", end="", flush=True)
    ticker = threading.Thread(target=count_up, daemon=True)
    if tty:
        ticker.start()
    try:
        yield
    except BaseException:
        print(flush=True)  # end the line before whatever comes next
        raise
    finally:
        done.set()
        if tty:
            ticker.join()
    took = f"ready in {time.monotonic() - started:.1f} s"
    print(f"\r{label} ... {took}   " if tty else f" {took}", flush=True)


def run(settings: Settings, duration_s: float | None) -> int:
    root = settings.data_dir.resolve() / "demo"
    shutil.rmtree(root, ignore_errors=True)
    kafka = KafkaCluster(root / "kafka", size=1)
    redis = RedisServer(root / "redis")
    services: list[ServerProcess] = []
    host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::") else settings.gateway_host
    base_url = f"http://{host}:{settings.gateway_port}"
    signals = Signals()
    signals.install()
    print(f"catalogue of running auctions: {base_url}/  (open it in a browser; it is up in a few seconds)", flush=True)
    try:
        with step("starting Kafka (KRaft, one node)"):
            kafka.start()
        with step("starting Redis (AOF)"):
            redis.start()
        metrics_port = free_port()
        env = service_env(settings, kafka, redis, root / "services", metrics_port)
        with step("starting the worker and the gateway"):
            for name in ("worker", "gateway"):
                proc = ServerProcess(name, [sys.executable, "-m", "app.cli", name], root / f"{name}.log", env=env)
                proc.start()
                services.append(proc)
            wait_until(
                lambda: gateway_feed_live(base_url), 60, f"the gateway at {base_url}", alive=services[-1].running
            )
        kafka_proc, redis_proc = kafka.nodes[0].process, redis.process
        assert kafka_proc is not None and redis_proc is not None
        print(
            f"\nrunning:\n  catalogue {base_url}/\n"
            f"  Kafka     {kafka.bootstrap}  pid {kafka_proc.pid}  (log {kafka_proc.log_path})\n"
            f"  Redis     {redis.url}  pid {redis_proc.pid}  (AOF in {redis.data_dir})\n"
            f"  worker    pid {services[0].pid}, metrics http://127.0.0.1:{metrics_port}/metrics"
            f"  (log {services[0].log_path})\n"
            f"  gateway   {base_url}  pid {services[1].pid}  (log {services[1].log_path})\n"
            f"  metrics   {base_url}/metrics\n\nsynthetic auctions (open one in a browser; Ctrl-C stops everything):",
            flush=True,
        )
        asyncio.run(_generate_until_stopped(kafka.bootstrap, base_url, duration_s, signals))
        return 0
    except Interrupted as signalled:
        print(f"{signalled} during start-up", flush=True)
        return 130
    finally:
        signals.stopping = True
        print("\nstopping ...", flush=True)
        for proc in reversed(services):
            proc.stop()
        redis.stop()
        kafka.stop()
        kill_children()  # anything a signal caught half-way through being started
        print("stopped.", flush=True)
        signals.restore()


async def _generate_until_stopped(bootstrap: str, base_url: str, duration_s: float | None, signals: Signals) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals.wake = lambda: loop.call_soon_threadsafe(stop.set)
    if signals.stopping:  # a signal came between start-up and here
        stop.set()
    if duration_s is not None:
        loop.call_later(duration_s, stop.set)
    try:
        await generate(bootstrap, base_url, stop, random.Random())
    finally:
        signals.stopping = True  # whatever ended the generator, the demo stops now
        signals.wake = None
