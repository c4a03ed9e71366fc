"""`Resources`: checked when written, with messages that name the field, the value and the fix."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from engine import CompileError, ConfigError, Resources, task
from engine.errors import InvalidResources
from engine.events import ExecutionCreated, decode_event, encode_event
from engine.models import TaskNode, TaskOptions, TaskRef, WorkflowSpec


def lambda_free(x: int) -> int:
    return x


# --- accepted --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mem", "expected"),
    [
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1.5Gi", 3 * 2**29),
        (".5Ki", 512),
        ("1G", 10**9),
        ("1500M", 1_500_000_000),
        ("100k", 100_000),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("1073741824", 2**30),
        ("0.5", 1),  # fractions of a byte round up, as Kubernetes does
        ("7Ei", 7 * 2**60),
        (2**30, 2**30),
        (None, None),
    ],
)
def test_memory_quantities(mem: Any, expected: int | None) -> None:
    assert Resources(mem=mem).mem_bytes == expected


def test_int_memory_is_stored_as_its_string() -> None:
    # the field has always been a string in stored events; bytes as an int are a convenience
    resources = Resources(mem=2**30)
    assert resources.mem == "1073741824" and resources == Resources(mem="1073741824")
    assert msgspec.json.encode(resources) == b'{"mem":"1073741824"}'


@pytest.mark.parametrize("value", [0, 0.25, 1, 2.5, 64])
def test_cpu_and_gpu_take_numbers_and_fractions(value: float) -> None:
    resources = Resources(cpu=value, gpu=value)
    assert resources.cpu == value and resources.gpu == value


def test_defaults() -> None:
    assert Resources() == Resources(cpu=1.0, mem=None, gpu=0.0)
    assert Resources().mem_bytes is None


# --- rejected when written -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"cpu": -3}, ["Resources(cpu=-3)", "cpu must be a finite number >= 0"]),
        ({"cpu": True}, ["Resources(cpu=True)", "cpu must be a number >= 0"]),
        ({"cpu": math.inf}, ["Resources(cpu=inf)", "finite"]),
        ({"cpu": 10**400}, ["cpu must be a finite number >= 0 below 2**53"]),
        ({"cpu": "500m"}, ["Resources(cpu='500m')", "write cpu=0.5"]),
        ({"cpu": "2"}, ["write cpu=2, a number rather than a string"]),
        ({"gpu": "lots"}, ["Resources(gpu='lots')", "gpu must be a number >= 0, like 1 or 0.5"]),
        ({"gpu": -0.5}, ["Resources(gpu=-0.5)"]),
        ({"gpu": math.nan}, ["Resources(gpu=nan)"]),
        ({"mem": "lots"}, ["Resources(mem='lots'): memory must be a quantity like '512Mi' or '2Gi'"]),
        ({"mem": ""}, ["Resources(mem='')", "'512Mi'"]),
        ({"mem": "2GB"}, ["Resources(mem='2GB')", "write '2G' (2 * 1000**3 bytes) or '2Gi' (2 * 1024**3 bytes)"]),
        ({"mem": "512mb"}, ["write '512M'", "'512Mi'", "case-sensitive"]),
        ({"mem": "4gi"}, ["write '4G'", "'4Gi'"]),
        ({"mem": "8K"}, ["write '8k' (8 * 1000 bytes) or '8Ki' (8 * 1024 bytes)"]),
        ({"mem": "500m"}, ["'m' means thousandths of a byte", "'500M'", "'500Mi'"]),
        ({"mem": "2 Gi"}, ["write '2Gi', without sign or spaces"]),
        ({"mem": " 512"}, ["write '512', without sign or spaces"]),
        ({"mem": "-1Gi"}, ["Resources(mem='-1Gi')", "memory must be positive"]),
        ({"mem": "0"}, ["Resources(mem='0')", "at least one byte"]),
        ({"mem": 0}, ["Resources(mem=0)", "at least one byte"]),
        ({"mem": -5}, ["Resources(mem=-5)", "at least one byte"]),
        ({"mem": "9Ei"}, ["less than 2**63 bytes"]),
        ({"mem": "1e99"}, ["less than 2**63 bytes"]),
        ({"mem": 1.5e9}, ["Resources(mem=1500000000.0)", "an int of bytes"]),
        ({"mem": True}, ["Resources(mem=True)"]),
    ],
)
def test_invalid_resources_name_the_field_the_value_and_the_fix(kwargs: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(InvalidResources) as info:
        Resources(**kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    (field,) = kwargs
    assert info.value.field == field
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_replace_is_checked_too() -> None:
    with pytest.raises(InvalidResources, match="cpu"):
        msgspec.structs.replace(Resources(cpu=2), cpu=-1)


# --- stored form -----------------------------------------------------------------------------------


def test_valid_resources_round_trip_through_encoding() -> None:
    options = TaskOptions(resources=Resources(cpu=2, mem="1.5Gi", gpu=0.25))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(options), type=TaskOptions) == options
    assert msgspec.json.decode(msgspec.json.encode(options), type=TaskOptions) == options


def test_invalid_stored_resources_fail_as_a_validation_error() -> None:
    # a tampered or hand-written spec: decoding reports it the way it reports any bad field
    raw = msgspec.json.encode({"resources": {"mem": "lots"}})
    with pytest.raises(msgspec.ValidationError, match=r"Resources\(mem='lots'\).*\$\.resources"):
        msgspec.json.decode(raw, type=TaskOptions)


def test_stored_events_holding_resources_still_decode() -> None:
    # What writers before the check stored (int cpu as msgpack int, mem as string), inside a real event
    spec = WorkflowSpec(
        name="w",
        inputs=[],
        outputs=[],
        nodes=[
            TaskNode(
                id="train",
                task=TaskRef(name="train", module="m", qualname="train", source_hash="h"),
                inputs={},
                interface_outputs=[],
                options=TaskOptions(resources=Resources(cpu=2, mem="2Gi", gpu=0.5)),
            )
        ],
        output_bindings={},
    )
    event = ExecutionCreated(
        execution_id="e1",
        version=1,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        project="p",
        domain="development",
        workflow="w",
        workflow_version="v1",
        spec=spec,
        inputs={},
    )
    payload = encode_event(event)
    assert b"2Gi" in payload
    decoded = decode_event(payload)
    assert decoded == event
    assert decoded.spec.nodes[0].options.resources.mem_bytes == 2 * 2**30


# --- in @task ---------------------------------------------------------------------------------------


def test_task_keeps_valid_resources() -> None:
    t = task(resources=Resources(cpu=0.5, mem="256Mi", gpu=0.25))(lambda_free)
    assert t.options.resources.mem_bytes == 256 * 2**20


@pytest.mark.parametrize(
    ("resources", "fragments"),
    [
        ({"cpu": 1, "mem": "2Gi"}, ["task 'lambda_free'", "not a dict", "write resources=Resources(cpu=1, mem='2Gi')"]),
        ({"memory": "2Gi"}, ["task 'lambda_free'", "unknown key(s) ['memory']", "cpu=..., mem=..., gpu=..."]),
        ("2Gi", ["task 'lambda_free'", "resources must be engine.Resources(cpu=..., mem=..., gpu=...)", "'2Gi'"]),
    ],
)
def test_task_rejects_resources_that_are_not_resources(resources: Any, fragments: list[str]) -> None:
    with pytest.raises(CompileError) as info:
        task(resources=resources)(lambda_free)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_task_names_itself_when_a_dict_holds_bad_values() -> None:
    with pytest.raises(CompileError) as info:
        task(resources={"mem": "lots"})(lambda_free)
    message = str(info.value)
    assert "task 'lambda_free'" in message and "Resources(mem='lots'): memory must be a quantity" in message
    assert isinstance(info.value.__cause__, InvalidResources)
