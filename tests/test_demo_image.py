"""`jaxpde demo denoise-image` end to end on a tiny crop with a tiny model."""

import json

import pytest

from jaxpde.cli import main
from jaxpde.demo import denoise_image_demo

pytest.importorskip(
    "skimage", reason="the image demo needs scikit-image (pip install 'jaxpde[images]')"
)

TINY = {"depth": 1, "width": 2, "kernel_size": 3, "repeats": 1, "filters": "dct"}


def test_image_demo_writes_a_certified_model_and_a_figure(tmp_path):
    summary = denoise_image_demo(
        tmp_path,
        photograph="coins",
        sigma=25.0,
        crop=24,
        seconds=0.5,
        model=TINY,
        patches=64,
    )
    assert (tmp_path / "denoise-image.png").stat().st_size > 0
    written = json.loads((tmp_path / "denoise-image.json").read_text())
    assert (
        written["certificate"]["certified"]
        and written["certificate"]["gain_bound"] == 1.0
    )
    assert written["falsifier"]["largest_gain_found"] <= 1 + 1e-9
    assert written["crop"] == [24, 24] and written["training_steps"] >= 1
    # Diffusion removes noise even after a few steps.
    assert summary["denoised_psnr"] > summary["noisy_psnr"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--photograph", "lena"],
        ["--sigma", "0"],
        ["--crop", "4"],
        ["--seconds", "-1"],
    ],
)
def test_image_demo_cli_refuses_bad_arguments(argv, tmp_path, capsys):
    assert main(["demo", "denoise-image", "--out", str(tmp_path), *argv]) == 2
    assert "jaxpde demo denoise-image" in capsys.readouterr().err
