"""How an Engine is put together: several executors, services run with the engine, and settings
whose backend is missing refused with a ConfigError instead of ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import ConfigError, Engine
from engine.interfaces import Service, ServiceContext, ServiceHealth
from engine.testing import FakeExecutor, InMemoryEventStore

from .conftest import wait_until


class Recorder(Service):
    """A service that records its life cycle and what the engine gave it."""

    def __init__(self, name: str, log: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.context: ServiceContext | None = None
        self.ran = False

    async def start(self, context: ServiceContext) -> None:
        if self.fail_start:
            raise ConfigError(f"service {self.name} cannot reach its broker")
        self.context = context
        self.log.append(f"start {self.name}")

    async def run(self) -> None:
        self.ran = True
        await super().run()

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    def health(self) -> ServiceHealth:
        return ServiceHealth(ok=self.ran, detail="" if self.ran else "not running yet")


async def test_services_start_in_order_run_and_stop_in_reverse() -> None:
    log: list[str] = []
    first, second = Recorder("relay", log), Recorder("poller", log)
    store = InMemoryEventStore()
    async with Engine(store, [FakeExecutor(name="local")], services=[first, second]) as engine:
        assert log == ["start relay", "start poller"]
        assert first.context is not None and first.context.store is store
        await wait_until(lambda: first.ran and second.ran)
        assert engine.health() == {"relay": ServiceHealth(True), "poller": ServiceHealth(True)}
    assert log == ["start relay", "start poller", "stop poller", "stop relay"]


async def test_a_service_that_cannot_start_stops_the_engine_from_starting() -> None:
    log: list[str] = []
    services = [Recorder("a", log), Recorder("b", log, fail_start=True)]
    engine = Engine(InMemoryEventStore(), [FakeExecutor(name="local")], services=services)
    with pytest.raises(ConfigError, match="cannot reach its broker"):
        async with engine:
            pass
    assert log == ["start a", "stop a"]


def test_executors_are_keyed_by_name_and_the_default_is_checked() -> None:
    engine = Engine(InMemoryEventStore(), [FakeExecutor(name="local"), FakeExecutor(name="gpu")])
    assert sorted(engine.executors) == ["gpu", "local"]
    with pytest.raises(ConfigError, match="two executors are named 'gpu'"):
        Engine(InMemoryEventStore(), [FakeExecutor(name="gpu"), FakeExecutor(name="gpu")])
    with pytest.raises(ConfigError, match="default_executor='ray' is not one of"):
        Engine(InMemoryEventStore(), [FakeExecutor(name="local")], default_executor="ray")


def test_embedded_builds_every_named_executor(tmp_path: Path) -> None:
    engine = Engine.embedded(tmp_path, executors=["local", FakeExecutor(name="gpu")])
    assert sorted(engine.executors) == ["gpu", "local"]
    with pytest.raises(ConfigError, match=r"no backend named 'nope' in entry-point group 'slipstream\.executors'"):
        Engine.embedded(tmp_path, executors=["nope"])


def test_nats_without_an_event_stream_backend_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine._wiring as wiring

    installed = wiring.installed
    # as if the NATS plugin were not installed
    monkeypatch.setattr(wiring, "installed", lambda group: [ep for ep in installed(group) if ep.name != "nats"])
    monkeypatch.delenv("SLIPSTREAM_NATS_URL", raising=False)
    with pytest.raises(ConfigError, match=r"'slipstream\.event_sinks' for the event stream at 'nats://broker:4222'"):
        Engine.connect(postgres="postgresql://localhost/test", nats="nats://broker:4222")
    monkeypatch.setenv("SLIPSTREAM_NATS_URL", "nats://from-env:4222")
    with pytest.raises(ConfigError, match="nats://from-env:4222"):
        Engine.connect(postgres="postgresql://localhost/test")


def test_a_cluster_address_for_an_executor_without_a_cluster_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLIPSTREAM_NATS_URL", raising=False)
    with pytest.raises(ConfigError, match="executor 'local' does not connect to a cluster"):
        Engine.connect(postgres="postgresql://localhost/test", executor="local", ray_address="ray://head:10001")
    monkeypatch.setenv("SLIPSTREAM_RAY_ADDRESS", "auto")
    with pytest.raises(ConfigError, match="'auto'"):
        Engine.connect(postgres="postgresql://localhost/test", executor="local")
    # the default executor, ray, takes the address
    assert Engine.connect(postgres="postgresql://localhost/test").executors["ray"].address == "auto"  # type: ignore[attr-defined]
