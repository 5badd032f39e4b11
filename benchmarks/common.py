"""What every benchmark script records about the machine it ran on."""

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
