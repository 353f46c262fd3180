"""What a sandbox needs to use the GPUs placed on it: their device nodes, the control nodes,
and the host's NVIDIA driver libraries and tools (the driver lives on the host, not in images).

Only the devices of the container's own GPUs are exposed; the libraries are bound read-only
under /usr/local/nvidia and found through LD_LIBRARY_PATH and PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ....exception import ExecutionError

CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
DRIVER_LIBRARY = re.compile(r"^lib(cuda|nvidia-[\w-]+|nvcuvid|nvoptix)\.so(\.\d+)*$")
DRIVER_TOOLS = ("nvidia-smi", "nvidia-debugdump")
LIB_DIR = "/usr/local/nvidia/lib64"
BIN_DIR = "/usr/local/nvidia/bin"


@dataclass
class GPUAccess:
    devices: list[str] = field(default_factory=list)              # host device paths
    binds: list[tuple[Path, str]] = field(default_factory=list)   # host file -> container path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, path: str) -> dict[str, str]:
        """The variables that find the driver's libraries and tools, `path` being the sandbox's PATH."""
        return {**self.env, "PATH": f"{BIN_DIR}:{path}"}


def _ldconfig_libraries(ldconfig_output: str | None) -> dict[str, Path]:
    """Driver libraries known to the host's loader: soname -> file."""
    if ldconfig_output is None:
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
        try:
            ldconfig_output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                                             timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            ldconfig_output = ""
    found: dict[str, Path] = {}
    for line in ldconfig_output.splitlines():
        name, _, target = line.strip().partition(" => ")
        soname, _, flags = name.partition(" ")
        if not target or not DRIVER_LIBRARY.match(soname):
            continue
        if flags and "64" not in flags:  # "(libc6)" alone is a 32-bit library
            continue
        found.setdefault(soname, Path(target))
    return found


def gpu_access(indices: tuple[int, ...], *, dev_root: Path = Path("/dev"),
               ldconfig_output: str | None = None) -> GPUAccess:
    """Devices, driver files and environment for a sandbox holding GPUs `indices`."""
    access = GPUAccess()
    for index in indices:
        node = dev_root / f"nvidia{index}"
        if not node.exists():
            raise ExecutionError(
                f"GPU {index} was placed on this container but {node} does not exist: is the NVIDIA "
                "driver loaded on this host? (If the inventory comes from FERRY_GPUS on a machine "
                "without GPUs, run GPU functions with FERRY_RUNTIME=process.)"
            )
        access.devices.append(str(node))
    access.devices += [str(dev_root / name) for name in CONTROL_DEVICES if (dev_root / name).exists()]
    for soname, target in sorted(_ldconfig_libraries(ldconfig_output).items()):
        if target.exists():
            access.binds.append((target.resolve(), f"{LIB_DIR}/{soname}"))
    for tool in DRIVER_TOOLS:
        path = shutil.which(tool)
        if path:
            access.binds.append((Path(path).resolve(), f"{BIN_DIR}/{tool}"))
    access.env = {"LD_LIBRARY_PATH": LIB_DIR}
    return access
