"""Previews of phantom cases without label overlays, for docs/phantom.md.

Run:  .venv/bin/python benchmarks/phantom_previews.py [--out docs/images] [--seed 0]
          [--cases 0 2 3 7 6] [--domain-case 1] [--domains t1fs t1-1p5t]

Each case is generated at the default size (80x160x160) and shown in three planes through the
head centre: mid-coronal (lateral to the right, superior up), mid-axial (lateral to the right,
anterior up) and the native axial-oblique slice of the array (the middle slice, as acquired).
One PNG per case (``phantom_<domain>_case<NNN>.png``); the title gives sex, side, stage and
grades, so a reader can see which case is which without any label drawn on the image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avnbench.data.phantom import DEFAULT_SHAPE, generate_case, plan_case
from avnbench.data.phantom.anatomy import draw_anatomy
from avnbench.data.phantom.plan import case_streams, draw_side
from avnbench.evaluation.slices import mid_coronal_slice, plane_slice

HALF_WIDTH_MM = 34.0
PIXEL_MM = 0.3


def patient_sex(index: int, seed: int) -> str:
    """The sex drawn for case ``index`` (re-drawn from its streams, as generate_case does)."""
    plan = plan_case(index)
    rng, patient_rng = case_streams(plan, seed)
    side = draw_side(plan, patient_rng)
    return draw_anatomy(rng, patient_rng, side).sex


def render(index: int, seed: int, domain: str, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    case = generate_case(plan_case(index), DEFAULT_SHAPE, seed, domain)
    meta, image = case.meta, case.image.astype(np.float32)
    axes = meta.landmarks.patient_axes
    coronal = mid_coronal_slice(image, meta, PIXEL_MM, HALF_WIDTH_MM, order=1)
    axial = plane_slice(image, meta, axes.lateral, axes.anterior, PIXEL_MM, HALF_WIDTH_MM, order=1)
    native = image[image.shape[0] // 2]
    _, sy, sx = meta.geometry.spacing_zyx
    low, high = np.percentile(image, [0.5, 99.7])
    fig = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    extent = (-HALF_WIDTH_MM, HALF_WIDTH_MM, -HALF_WIDTH_MM, HALF_WIDTH_MM)
    panels = (
        ("mid-coronal", coronal.array, extent, "lateral (mm)", "superior (mm)"),
        ("mid-axial", axial.array, extent, "lateral (mm)", "anterior (mm)"),
        ("native axial-oblique (middle slice)", native,
         (0, native.shape[1] * sx, 0, native.shape[0] * sy), "array x: along the neck (mm)", "array y (mm)"),
    )
    for k, (title, array, ext, h_name, v_name) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(array, cmap="gray", vmin=low, vmax=high, origin="lower", extent=ext, interpolation="bilinear")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(h_name, fontsize=8)
        ax.set_ylabel(v_name, fontsize=8)
        ax.tick_params(labelsize=7)
    sex = "male" if patient_sex(index, seed) == "M" else "female"
    fig.suptitle(
        f"phantom case {meta.case_id} (seed {seed}, domain {domain}): {sex}, {meta.side} hip, "
        f"ARCO {meta.arco or '-'}, Steinberg {meta.steinberg or '-'}, JIC {meta.jic or '-'} — synthetic, "
        "no overlay", fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"phantom_{domain}_case{index:03d}.png"
    fig.savefig(path, format="png")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, nargs="+", default=[0, 2, 3, 7, 6])
    parser.add_argument("--domain-case", type=int, default=1, help="case shown in the other domains (1: ARCO IIIA)")
    parser.add_argument("--domains", nargs="*", default=["t1fs", "t1-1p5t"])
    args = parser.parse_args()
    for index in args.cases:
        print(render(index, args.seed, "t1", args.out))
    for domain in args.domains:
        print(render(args.domain_case, args.seed, domain, args.out))


if __name__ == "__main__":
    main()
