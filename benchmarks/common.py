"""What every benchmark script records about the machine it ran on."""

import math
import os
import pathlib
import platform

import jax
import numpy as np


def device_name() -> str:
    """`cpu`, or the accelerator's kind with spaces replaced (e.g. `NVIDIA-H200`)."""
    device = jax.devices()[0]
    return device.platform if device.platform == "cpu" else device.device_kind.replace(" ", "-")


def processor() -> str:
    """The host processor's model name."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Device, processor, core count and library versions, for the results' metadata."""
    return {
        "device": device_name(),
        "processor": processor(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "numpy": np.__version__,
    }


def finite_json(value):
    """`value` with NumPy scalars as Python numbers and non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
