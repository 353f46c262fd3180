"""The GPUs of this machine, and placement of GPU requests onto them.

`inventory()` finds the devices: the `FERRY_GPUS` override when set (for example "H100:2,T4:1",
or "none" to use no GPU), else NVML through the optional `pynvml` module (package
`nvidia-ml-py`), else `nvidia-smi`, else none. `GPUAllocator` hands whole devices to containers:
two allocations never share a device and one allocation never mixes device types.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Sequence

from .._gpu import DEVICE_TYPES, GPURequest, canonical_type
from ..exception import InvalidError

logger = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = [
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
]
"""Arguments given to `nvidia-smi` when NVML is not available."""

_NVIDIA_SMI_TIMEOUT_S = 15.0

# Typical `memory.total` (MiB) of each type, used for devices declared by the override.
_TYPICAL_MEMORY_MB: dict[str, int] = {
    "T4": 15360,
    "L4": 23034,
    "A10": 23028,
    "L40S": 46068,
    "A100-40GB": 40960,
    "A100-80GB": 81920,
    "H100": 81559,
    "H200": 143771,
    "B200": 183359,
}

# Between the 40 GB and 80 GB A100 (40960 and 81920 MiB as reported).
_A100_80GB_THRESHOLD_MB = 60_000

# Product-name tokens (upper case, matched as whole words) in the order they are tried.
_PRODUCT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"(?<![A-Z0-9]){token}(?![A-Z0-9])"), gpu_type)
    for token, gpu_type in (
        ("B200", "B200"),
        ("H200", "H200"),
        ("H100", "H100"),
        ("A100", "A100"),
        ("L40S", "L40S"),
        ("L4", "L4"),
        ("A10G?", "A10"),
        ("T4", "T4"),
    )
)


@dataclass(frozen=True)
class GPUDevice:
    """One physical GPU: NVML index, canonical type, product name, memory (MiB) and UUID.

    `type` is a canonical device type ("H100", "A100-80GB"...) or, for a product Ferry does not
    know, the product name without its vendor prefix (such devices only serve `gpu="any"`).
    """

    index: int
    type: str
    name: str
    memory_mb: int
    uuid: str


def product_to_type(name: str, memory_mb: int) -> str | None:
    """Map an NVIDIA product name (as NVML reports it) to a canonical GPU type, or None."""
    upper = name.strip().upper()
    for pattern, gpu_type in _PRODUCT_PATTERNS:
        if pattern.search(upper) is None:
            continue
        if gpu_type != "A100":
            return gpu_type
        if "80GB" in upper:
            return "A100-80GB"
        if "40GB" in upper:
            return "A100-40GB"
        return "A100-80GB" if memory_mb >= _A100_80GB_THRESHOLD_MB else "A100-40GB"
    return None


def _device(index: int, name: str, memory_mb: int, uuid: str) -> GPUDevice:
    gpu_type = product_to_type(name, memory_mb)
    if gpu_type is None:
        gpu_type = re.sub(r"^(NVIDIA|TESLA)\s+", "", name.strip(), flags=re.IGNORECASE).upper()
        logger.info("unknown GPU product %r (device %d): it will only serve gpu='any'", name, index)
    return GPUDevice(index=index, type=gpu_type, name=name, memory_mb=memory_mb, uuid=uuid)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _discover_nvml() -> list[GPUDevice] | None:
    """The devices NVML reports, or None when NVML (or `pynvml`) is not usable."""
    try:
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - every NVML failure means "no NVML here"
        logger.debug("NVML unavailable: %s", exc)
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            memory_mb = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            devices.append(_device(index, name, memory_mb, uuid))
        return devices
    except Exception as exc:  # noqa: BLE001
        logger.warning("NVML failed while listing GPUs: %s", exc)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - nothing useful to do
            pass


def parse_nvidia_smi(output: str) -> list[GPUDevice]:
    """Parse `nvidia-smi` output for `NVIDIA_SMI_QUERY`; malformed lines are skipped."""
    devices = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4:
            if line.strip():
                logger.warning("ignoring unexpected nvidia-smi line %r", line)
            continue
        index_text, memory_text, uuid = fields[0], fields[-2], fields[-1]
        name = ", ".join(fields[1:-2])
        try:
            index = int(index_text)
        except ValueError:
            logger.warning("ignoring unexpected nvidia-smi line %r", line)
            continue
        memory_mb = int(memory_text) if memory_text.isdigit() else 0
        devices.append(_device(index, name, memory_mb, uuid))
    return devices


def _discover_nvidia_smi() -> list[GPUDevice] | None:
    """The devices `nvidia-smi` lists, or None when it is missing or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi failed: %s", exc)
        return None
    if result.returncode != 0:
        logger.warning("nvidia-smi exited %d: %s", result.returncode, result.stderr.strip())
        return None
    return parse_nvidia_smi(result.stdout)


def discover() -> list[GPUDevice]:
    """This machine's GPUs through NVML, else `nvidia-smi`; [] when neither finds any."""
    devices = _discover_nvml()
    if not devices:
        devices = _discover_nvidia_smi()
    return sorted(devices or [], key=lambda device: device.index)


def from_override(text: str) -> list[GPUDevice]:
    """Devices declared by a `FERRY_GPUS` value such as "H100:2,T4:1" ("none" for no GPU)."""
    stripped = text.strip()
    if stripped.lower() in ("none", "0"):
        return []
    valid = ", ".join(DEVICE_TYPES)
    devices: list[GPUDevice] = []
    for entry in stripped.split(","):
        type_text, sep, count_text = entry.partition(":")
        gpu_type = canonical_type(type_text)
        if gpu_type is None or gpu_type not in DEVICE_TYPES:
            hint = ' (say "A100-40GB" or "A100-80GB")' if gpu_type == "A100" else ""
            raise InvalidError(
                f"Invalid GPU type {type_text.strip()!r} in FERRY_GPUS={text!r}{hint}. "
                f'Expected "TYPE[:COUNT],..." or "none"; valid types: {valid}.'
            )
        count_text = count_text.strip()
        if sep and not (count_text.isascii() and count_text.isdigit() and int(count_text) > 0):
            raise InvalidError(
                f"Invalid GPU count {count_text!r} for {gpu_type} in FERRY_GPUS={text!r}: "
                "expected a positive integer."
            )
        for _ in range(int(count_text) if sep else 1):
            index = len(devices)
            devices.append(
                GPUDevice(
                    index=index,
                    type=gpu_type,
                    name=f"{gpu_type} (FERRY_GPUS override)",
                    memory_mb=_TYPICAL_MEMORY_MB[gpu_type],
                    uuid=f"GPU-ferry-override-{index}",
                )
            )
    return devices


def inventory(override: str | None = None) -> list[GPUDevice]:
    """The override's devices when `override` is non-empty, else `discover()`."""
    if override is not None and override.strip():
        return from_override(override)
    return discover()


class GPUAllocator:
    """Exclusive placement of GPU requests onto a fixed list of devices (single-threaded)."""

    def __init__(self, devices: Sequence[GPUDevice]) -> None:
        indices = [device.index for device in devices]
        if len(set(indices)) != len(indices):
            raise ValueError(f"duplicate GPU indices in {indices}")
        self._devices: tuple[GPUDevice, ...] = tuple(devices)
        self._by_index = {device.index: device for device in devices}
        self._used: set[int] = set()
        # Device types in inventory order; an allocation takes devices of one type only.
        self._types: tuple[str, ...] = tuple(dict.fromkeys(device.type for device in devices))

    @property
    def devices(self) -> tuple[GPUDevice, ...]:
        """Every device, free or not."""
        return self._devices

    def free_devices(self) -> list[GPUDevice]:
        """The devices not currently allocated."""
        return [device for device in self._devices if device.index not in self._used]

    def _candidates(self, gpu_type: str, *, free_only: bool) -> list[int]:
        return [
            device.index
            for device in self._devices
            if device.type == gpu_type and not (free_only and device.index in self._used)
        ]

    def allocate(self, request: GPURequest) -> tuple[str, list[int]] | None:
        """Claim devices for the first option (in preference order) that fits now.

        Returns the device type and the claimed indices, or None when no option fits at the
        moment. "A100" and "any" take devices of a single type, the first type in inventory order
        with enough free devices.
        """
        for option in request.options:
            for gpu_type in self._types:
                if not option.matches(gpu_type):
                    continue
                free = self._candidates(gpu_type, free_only=True)
                if len(free) >= option.count:
                    claimed = free[: option.count]
                    self._used.update(claimed)
                    return gpu_type, claimed
        return None

    def release(self, indices: Iterable[int]) -> None:
        """Give devices back; raises ValueError for unknown or not-allocated indices."""
        to_free = list(indices)
        for index in to_free:
            if index not in self._by_index:
                raise ValueError(f"GPU {index} is not in this inventory ({self.describe()})")
            if index not in self._used:
                raise ValueError(f"GPU {index} is not allocated")
        self._used.difference_update(to_free)

    def satisfiable(self, request: GPURequest) -> bool:
        """Whether some option could ever be served by this inventory (all devices free)."""
        return any(
            option.matches(gpu_type)
            and len(self._candidates(gpu_type, free_only=False)) >= option.count
            for option in request.options
            for gpu_type in self._types
        )

    def describe(self) -> str:
        """A summary for messages, such as "2x H100 (1 free), 1x T4 (1 free)" or "no GPUs"."""
        if not self._devices:
            return "no GPUs"
        parts = []
        for gpu_type in self._types:
            total = len(self._candidates(gpu_type, free_only=False))
            free = len(self._candidates(gpu_type, free_only=True))
            parts.append(f"{total}x {gpu_type} ({free} free)")
        return ", ".join(parts)


def unplaceable_message(tag: str, request: GPURequest, inventory: str) -> str:
    """Why `tag`'s GPU request can never be placed, and what to do about it."""
    return (f"{tag} asks for gpu={str(request)!r}, which no machine of this Ferry cluster has: "
            f"the inventory is {inventory}. Ask for a GPU that is present (or "
            f"\"any\"), add a fallback list, or declare the inventory with FERRY_GPUS.")


__all__ = [
    "GPUAllocator",
    "GPUDevice",
    "discover",
    "from_override",
    "inventory",
    "parse_nvidia_smi",
    "product_to_type",
    "unplaceable_message",
]
