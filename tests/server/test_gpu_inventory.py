"""Tests of GPU discovery, the FERRY_GPUS override and the GPU allocator."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ferry._gpu import GPURequest, parse_gpu
from ferry.exception import InvalidError
from ferry.server import gpu_inventory
from ferry.server.gpu_inventory import (
    GPUAllocator,
    GPUDevice,
    discover,
    from_override,
    inventory,
    parse_nvidia_smi,
    product_to_type,
)


def _request(spec: object) -> GPURequest:
    request = parse_gpu(spec)
    assert request is not None
    return request


# --- product names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "memory_mb", "expected"),
    [
        ("Tesla T4", 15360, "T4"),
        ("NVIDIA T4", 15360, "T4"),
        ("NVIDIA L4", 23034, "L4"),
        ("NVIDIA A10G", 23028, "A10"),
        ("NVIDIA A10", 23028, "A10"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4", 81920, "A100-80GB"),
        ("NVIDIA A100-PCIE", 40960, "A100-40GB"),
        ("NVIDIA H100 80GB HBM3", 81559, "H100"),
        ("NVIDIA H100 PCIe", 81559, "H100"),
        ("NVIDIA H100 NVL", 95830, "H100"),
        ("NVIDIA H200", 143771, "H200"),
        ("NVIDIA H200 NVL", 143771, "H200"),
        ("NVIDIA B200", 183359, "B200"),
        ("nvidia h100 80gb hbm3", 81559, "H100"),
        ("NVIDIA L40", 46068, None),
        ("Tesla V100-SXM2-16GB", 16160, None),
        ("NVIDIA GH200 480GB", 97871, None),
        ("NVIDIA GeForce RTX 4090", 24564, None),
        ("", 0, None),
    ],
)
def test_product_to_type(name: str, memory_mb: int, expected: str | None) -> None:
    assert product_to_type(name, memory_mb) == expected


# --- override ----------------------------------------------------------------------------------


def test_override_single_type() -> None:
    devices = from_override("H100:2")
    assert [(d.index, d.type) for d in devices] == [(0, "H100"), (1, "H100")]
    assert len({d.uuid for d in devices}) == 2
    assert all(d.memory_mb > 0 for d in devices)


def test_override_several_types() -> None:
    devices = from_override(" h100:2 , T4:1,a10g ")
    assert [(d.index, d.type) for d in devices] == [(0, "H100"), (1, "H100"), (2, "T4"), (3, "A10")]


def test_override_a100_and_no_count() -> None:
    assert [d.type for d in from_override("A100-80GB:4")] == ["A100-80GB"] * 4
    assert [d.type for d in from_override("A100-40GB")] == ["A100-40GB"]


def test_override_names_map_back_to_their_type() -> None:
    for device in from_override("T4,L4,A10,L40S,A100-40GB,A100-80GB,H100,H200,B200"):
        assert product_to_type(device.name, device.memory_mb) == device.type


@pytest.mark.parametrize("text", ["none", "NONE", "0"])
def test_override_none(text: str) -> None:
    assert from_override(text) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("X100:2", "Invalid GPU type 'X100'"),
        ("H100:2,", "Invalid GPU type ''"),
        ("any:2", "Invalid GPU type 'any'"),
        ("A100:2", 'say "A100-40GB" or "A100-80GB"'),
        ("H100:0", "Invalid GPU count '0' for H100"),
        ("H100:-1", "Invalid GPU count '-1' for H100"),
        ("H100:two", "Invalid GPU count 'two' for H100"),
        ("H100:", "Invalid GPU count '' for H100"),
    ],
)
def test_override_errors(text: str, fragment: str) -> None:
    with pytest.raises(InvalidError) as info:
        from_override(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_inventory_uses_override(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> list[GPUDevice]:
        raise AssertionError("discover() must not run when an override is given")

    monkeypatch.setattr(gpu_inventory, "discover", fail)
    assert [d.type for d in inventory("T4:2")] == ["T4", "T4"]
    assert inventory("none") == []


@pytest.mark.parametrize("override", [None, "", "  "])
def test_inventory_without_override_discovers(
    monkeypatch: pytest.MonkeyPatch, override: str | None
) -> None:
    found = [GPUDevice(0, "L4", "NVIDIA L4", 23034, "GPU-1")]
    monkeypatch.setattr(gpu_inventory, "discover", lambda: found)
    assert inventory(override) == found


# --- nvidia-smi --------------------------------------------------------------------------------

SMI_OUTPUT = """\
0, NVIDIA H100 80GB HBM3, 81559, GPU-aaaaaaaa-0000-0000-0000-000000000000
1, NVIDIA H100 80GB HBM3, 81559, GPU-bbbbbbbb-0000-0000-0000-000000000000
2, NVIDIA A100-SXM4-40GB, 40960, GPU-cccccccc-0000-0000-0000-000000000000
3, Tesla V100-SXM2-16GB, 16160, GPU-dddddddd-0000-0000-0000-000000000000
"""


def test_parse_nvidia_smi() -> None:
    devices = parse_nvidia_smi(SMI_OUTPUT + "\ngarbage line\nx, y, 1, z\n")
    uuid = "GPU-{}-0000-0000-0000-000000000000".format
    assert devices == [
        GPUDevice(0, "H100", "NVIDIA H100 80GB HBM3", 81559, uuid("aaaaaaaa")),
        GPUDevice(1, "H100", "NVIDIA H100 80GB HBM3", 81559, uuid("bbbbbbbb")),
        GPUDevice(2, "A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, uuid("cccccccc")),
        GPUDevice(3, "V100-SXM2-16GB", "Tesla V100-SXM2-16GB", 16160, uuid("dddddddd")),
    ]


def test_parse_nvidia_smi_unknown_memory() -> None:
    (device,) = parse_nvidia_smi("0, NVIDIA A100-PCIE, [N/A], GPU-x\n")
    assert device.memory_mb == 0
    assert device.type == "A100-40GB"


def _no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    return bin_dir


@pytest.mark.skipif(os.name != "posix", reason="needs a shell script on PATH")
def test_discover_falls_back_to_fake_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_nvml(monkeypatch)
    args_file = tmp_path / "args"
    _fake_smi(
        tmp_path,
        monkeypatch,
        f'echo "$@" > {args_file}\ncat <<EOF\n{SMI_OUTPUT}EOF\n',
    )
    devices = discover()
    assert [d.type for d in devices] == ["H100", "H100", "A100-40GB", "V100-SXM2-16GB"]
    assert args_file.read_text().split() == [
        "--query-gpu=index,name,memory.total,uuid",
        "--format=csv,noheader,nounits",
    ]


@pytest.mark.skipif(os.name != "posix", reason="needs a shell script on PATH")
def test_discover_tolerates_failing_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_nvml(monkeypatch)
    _fake_smi(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed" >&2\nexit 9\n')
    assert discover() == []


def test_discover_without_nvml_or_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_nvml(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert discover() == []


def test_discover_tolerates_nvidia_smi_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_nvml(monkeypatch)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def run(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(cmd="nvidia-smi", timeout=1)

    monkeypatch.setattr(subprocess, "run", run)
    assert discover() == []


def test_discover_mocked_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_nvml(monkeypatch)
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/bin/nvidia-smi")
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        stdout = "0, NVIDIA L4, 23034, GPU-l4\n"
        return subprocess.CompletedProcess(cmd, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    assert discover() == [GPUDevice(0, "L4", "NVIDIA L4", 23034, "GPU-l4")]
    assert calls[0][0] == "/opt/bin/nvidia-smi"


# --- NVML --------------------------------------------------------------------------------------


def _fake_pynvml(names: list[Any], *, init_error: bool = False) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    state = {"shutdown": 0}

    class NVMLError(Exception):
        pass

    def init() -> None:
        if init_error:
            raise NVMLError("NVML Shared Library Not Found")

    def shutdown() -> None:
        state["shutdown"] += 1

    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(names)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: names[h]  # type: ignore[attr-defined]
    memory = types.SimpleNamespace(total=81920 * 1024 * 1024)
    module.nvmlDeviceGetMemoryInfo = lambda h: memory  # type: ignore[attr-defined]
    module.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    module.state = state  # type: ignore[attr-defined]
    return module


def test_discover_prefers_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml([b"NVIDIA A100-SXM4", "NVIDIA H100 80GB HBM3"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail("used nvidia-smi"))
    assert discover() == [
        GPUDevice(0, "A100-80GB", "NVIDIA A100-SXM4", 81920, "GPU-0"),
        GPUDevice(1, "H100", "NVIDIA H100 80GB HBM3", 81920, "GPU-1"),
    ]
    assert fake.state["shutdown"] == 1


def test_discover_tolerates_nvml_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([], init_error=True))
    monkeypatch.setattr(
        gpu_inventory, "_discover_nvidia_smi", lambda: [GPUDevice(0, "T4", "Tesla T4", 15360, "u")]
    )
    assert [d.type for d in discover()] == ["T4"]


# --- allocator ---------------------------------------------------------------------------------


def _allocator(override: str) -> GPUAllocator:
    return GPUAllocator(from_override(override))


def test_describe() -> None:
    allocator = _allocator("H100:2,T4:1")
    assert allocator.describe() == "2x H100 (2 free), 1x T4 (1 free)"
    allocator.allocate(_request("H100"))
    assert allocator.describe() == "2x H100 (1 free), 1x T4 (1 free)"
    assert GPUAllocator([]).describe() == "no GPUs"


def test_allocate_specific_type() -> None:
    allocator = _allocator("T4:1,H100:4")
    assert allocator.allocate(_request("h100:2")) == ("H100", [1, 2])
    assert allocator.allocate(_request("T4")) == ("T4", [0])
    assert allocator.allocate(_request("T4")) is None
    assert allocator.allocate(_request("H100:3")) is None
    assert allocator.allocate(_request("H100:2")) == ("H100", [3, 4])


def test_fallback_order() -> None:
    allocator = _allocator("A100-80GB:2,H100:1")
    request = _request(["H100", "A100-80GB:2", "any"])
    assert allocator.allocate(request) == ("H100", [2])
    assert allocator.allocate(request) == ("A100-80GB", [0, 1])
    assert allocator.allocate(request) is None


def test_fallback_skips_options_that_do_not_fit_now() -> None:
    allocator = _allocator("H100:2,T4:2")
    assert allocator.allocate(_request("H100")) == ("H100", [0])
    assert allocator.allocate(_request(["H100:2", "T4:2"])) == ("T4", [2, 3])


def test_allocations_are_exclusive() -> None:
    allocator = _allocator("H100:8")
    seen: set[int] = set()
    for _ in range(4):
        result = allocator.allocate(_request("H100:2"))
        assert result is not None
        assert not seen & set(result[1])
        seen.update(result[1])
    assert seen == set(range(8))
    assert allocator.allocate(_request("H100")) is None
    assert allocator.allocate(_request("any")) is None
    assert allocator.free_devices() == []


def test_release() -> None:
    allocator = _allocator("H100:2")
    first = allocator.allocate(_request("H100:2"))
    assert first == ("H100", [0, 1])
    assert allocator.allocate(_request("H100")) is None
    allocator.release([1])
    assert allocator.allocate(_request("H100")) == ("H100", [1])
    allocator.release([0, 1])
    assert allocator.describe() == "2x H100 (2 free)"
    assert allocator.allocate(_request("H100:2")) == ("H100", [0, 1])


def test_release_errors() -> None:
    allocator = _allocator("H100:2")
    with pytest.raises(ValueError, match="not allocated"):
        allocator.release([0])
    with pytest.raises(ValueError, match="not in this inventory"):
        allocator.release([7])
    allocator.allocate(_request("H100"))
    with pytest.raises(ValueError, match="not allocated"):
        allocator.release([0, 1])  # all or nothing: 0 stays allocated
    assert allocator.describe() == "2x H100 (1 free)"


def test_any_never_mixes_types() -> None:
    allocator = _allocator("T4:1,L4:2,H100:3")
    assert allocator.allocate(_request("any:2")) == ("L4", [1, 2])
    assert allocator.allocate(_request("any:2")) == ("H100", [3, 4])
    assert allocator.allocate(_request("any:2")) is None  # 1 T4 + 1 H100 free: never mixed
    assert allocator.allocate(_request("any")) == ("T4", [0])
    assert allocator.allocate(_request("any")) == ("H100", [5])


def test_a100_matches_either_size_without_mixing() -> None:
    allocator = _allocator("A100-40GB:1,A100-80GB:2")
    assert allocator.allocate(_request("A100:2")) == ("A100-80GB", [1, 2])
    assert allocator.allocate(_request("A100")) == ("A100-40GB", [0])
    assert allocator.allocate(_request("A100")) is None


def test_specific_a100_size() -> None:
    allocator = _allocator("A100-40GB:2,A100-80GB:1")
    assert allocator.allocate(_request("A100-80GB")) == ("A100-80GB", [2])
    assert allocator.allocate(_request("A100-80GB")) is None
    assert allocator.allocate(_request("A10")) is None


def test_satisfiable() -> None:
    allocator = _allocator("H100:2,T4:1")
    assert allocator.satisfiable(_request("H100:2"))
    assert not allocator.satisfiable(_request("H100:3"))
    assert not allocator.satisfiable(_request("A100"))
    assert allocator.satisfiable(_request(["H100:8", "T4"]))
    assert allocator.satisfiable(_request("any:2"))
    assert not allocator.satisfiable(_request("any:3"))  # 3 of one type is impossible
    # Satisfiable looks at the whole inventory, not at what is free now.
    allocator.allocate(_request("H100:2"))
    assert allocator.satisfiable(_request("H100:2"))
    assert allocator.allocate(_request("H100:2")) is None


def test_no_gpus() -> None:
    allocator = GPUAllocator([])
    assert not allocator.satisfiable(_request("any"))
    assert allocator.allocate(_request(["H100", "any"])) is None


def test_unknown_devices_only_serve_any() -> None:
    allocator = GPUAllocator(parse_nvidia_smi("0, Tesla V100-SXM2-16GB, 16160, GPU-v\n"))
    assert not allocator.satisfiable(_request("H100"))
    assert allocator.allocate(_request(["H100", "any"])) == ("V100-SXM2-16GB", [0])
    assert allocator.describe() == "1x V100-SXM2-16GB (0 free)"


def test_discovered_indices_are_used() -> None:
    devices = [
        GPUDevice(4, "H100", "NVIDIA H100 80GB HBM3", 81559, "GPU-4"),
        GPUDevice(7, "H100", "NVIDIA H100 80GB HBM3", 81559, "GPU-7"),
    ]
    allocator = GPUAllocator(devices)
    assert allocator.allocate(_request("H100:2")) == ("H100", [4, 7])
    assert allocator.devices == tuple(devices)


def test_duplicate_indices_rejected() -> None:
    device = GPUDevice(0, "T4", "Tesla T4", 15360, "GPU-0")
    with pytest.raises(ValueError, match="duplicate"):
        GPUAllocator([device, device])
