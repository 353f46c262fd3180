"""What a sandbox holding GPUs gets: its own device nodes, the control nodes, and the host's
driver libraries and tools, read-only (tested with a fake /dev and loader cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.exception import ExecutionError
from ferry.server.runtimes.sandbox.gpu import LIB_DIR, gpu_access


def _fake_dev(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        (root / name).touch()
    return root


def test_only_the_placed_devices_and_the_control_nodes_are_exposed(tmp_path: Path):
    dev = _fake_dev(tmp_path / "dev", ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"])
    access = gpu_access((1, 2), dev_root=dev, ldconfig_output="")
    assert access.devices == [str(dev / "nvidia1"), str(dev / "nvidia2"), str(dev / "nvidiactl"),
                              str(dev / "nvidia-uvm")]
    assert str(dev / "nvidia0") not in access.devices


def test_driver_libraries_come_from_the_host_loader_cache(tmp_path: Path):
    dev = _fake_dev(tmp_path / "dev", ["nvidia0"])
    libs = tmp_path / "lib"
    libs.mkdir()
    for name in ("libcuda.so.550.1", "libnvidia-ml.so.550.1", "libcuda32.so.1"):
        (libs / name).touch()
    (libs / "libcuda.so.1").symlink_to(libs / "libcuda.so.550.1")
    ldconfig = "\n".join([
        "3 libs found in cache `/etc/ld.so.cache'",
        f"\tlibcuda.so.1 (libc6,x86-64) => {libs / 'libcuda.so.1'}",
        f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {libs / 'libnvidia-ml.so.550.1'}",
        f"\tlibcuda.so.1 (libc6) => {libs / 'libcuda32.so.1'}",      # 32-bit: not bound
        f"\tlibssl.so.3 (libc6,x86-64) => {libs / 'libssl.so.3'}",    # not a driver library
    ])
    access = gpu_access((0,), dev_root=dev, ldconfig_output=ldconfig)
    binds = {inside: host for host, inside in access.binds if inside.startswith(LIB_DIR)}
    assert binds == {f"{LIB_DIR}/libcuda.so.1": libs / "libcuda.so.550.1",
                     f"{LIB_DIR}/libnvidia-ml.so.1": libs / "libnvidia-ml.so.550.1"}
    assert access.env["LD_LIBRARY_PATH"] == LIB_DIR


def test_a_missing_device_node_is_a_clear_error(tmp_path: Path):
    dev = _fake_dev(tmp_path / "dev", [])
    with pytest.raises(ExecutionError, match="nvidia0 does not exist.*NVIDIA driver"):
        gpu_access((0,), dev_root=dev, ldconfig_output="")
