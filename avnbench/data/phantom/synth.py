"""Generating a phantom case and writing the dataset: plan → anatomy → lesion → image → files.

Each case draws from its own random stream in a fixed order (side and patient size, hip shape,
array placement, lesion roughening, lesion draws, then the image), so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avnbench.data.dataset import (
    CASES_FILE,
    FILE_ENDING,
    SPLITS_FILE,
    SPLITS_META_FILE,
    CaseMeta,
    CasesFile,
    Dataset,
    load_dataset,
    write_cases_file,
    write_dataset_json,
)
from avnbench.data.imageio import write_image
from avnbench.data.phantom.acquisition import render_image
from avnbench.data.phantom.anatomy import CaseFrame, draw_anatomy, place_case
from avnbench.data.phantom.domains import DEFAULT_DOMAIN, Domain, get_domain
from avnbench.data.phantom.lesion import draw_roughening, place_lesion
from avnbench.data.phantom.plan import (
    DEFAULT_SHAPE,
    PHANTOM_VERSION,
    CasePlan,
    case_streams,
    check_shape,
    dataset_name,
    draw_side,
    plan_case,
    spacing_for,
)
from avnbench.errors import ConfigError


@dataclass
class GeneratedCase:
    """One generated case: image (int16) and labels (uint8) arrays (z, y, x), metadata with
    geometry, landmarks and measured grades, the lesion draws made and timings (s)."""

    image: np.ndarray
    labels: np.ndarray
    meta: CaseMeta
    attempts: int = 1
    timings: dict[str, float] = field(default_factory=dict)


def case_meta(plan: CasePlan, frame: CaseFrame, measurements=None, steinberg=None, jic=None,
              arco=None) -> CaseMeta:
    """The case's metadata: identity from the plan, geometry and landmarks from the frame, and
    the measured grades (Steinberg and JIC computed on the labels, ARCO given by the plan)."""
    sources = {"steinberg": "computed", "jic": "computed"}
    if arco is not None:
        sources["arco"] = "given"
    return CaseMeta(
        case_id=plan.case_id, patient_id=plan.patient_id, side=frame.side,
        steinberg=steinberg, jic=jic, arco=arco, landmarks=frame.landmarks,
        geometry=frame.geometry, measurements=measurements or {}, grade_sources=sources,
    )


def generate_case(plan: CasePlan, shape=DEFAULT_SHAPE, seed: int = 0,
                  domain: Domain | str = DEFAULT_DOMAIN) -> GeneratedCase:
    """Generate one case (``shape`` voxels, z y x): draw anatomy and lesion, build labels, re-draw
    the lesion until its measured grades are clear of every threshold, then synthesise the image
    in acquisition ``domain`` (the anatomy, lesion and labels do not depend on it)."""
    domain = get_domain(domain)
    t0 = time.perf_counter()
    rng, patient_rng = case_streams(plan, seed)
    side = draw_side(plan, patient_rng)
    anatomy = draw_anatomy(rng, patient_rng, side)
    frame = place_case(anatomy, shape, rng)
    noise = draw_roughening(rng, frame.head_grid)
    placed = place_lesion(plan, frame, noise, rng, lambda: case_meta(plan, frame))
    t1 = time.perf_counter()
    measurements = placed.measurements
    measurements["ambiguity"] = "; ".join(placed.reasons) if placed.reasons else None
    image = render_image(frame, placed.lesion, noise, plan.stage, rng, domain)
    t2 = time.perf_counter()
    meta = case_meta(
        plan, frame, measurements,
        steinberg=measurements["steinberg"],
        jic=measurements["jic"],
        arco=plan.stage if placed.lesion is not None else None,
    )
    return GeneratedCase(image=image, labels=placed.labels, meta=meta, attempts=max(placed.attempts, 1),
                         timings={"labels_s": t1 - t0, "image_s": t2 - t1})


# ---------------------------------------------------------------------------------- dataset


def write_case(out: Path, case: GeneratedCase) -> None:
    """Write a generated case's image (int16) and labels (uint8) as NIfTI with its geometry."""
    import SimpleITK as sitk

    for array, path in (
        (case.image, out / "imagesTr" / f"{case.meta.case_id}_0000{FILE_ENDING}"),
        (case.labels, out / "labelsTr" / f"{case.meta.case_id}{FILE_ENDING}"),
    ):
        img = sitk.GetImageFromArray(array)
        case.meta.geometry.apply_to(img)
        # the one checked, atomic writer; SimpleITK's NIfTI writer stores no timestamp, so equal
        # arrays give equal bytes
        write_image(img, path, compression_level=1)


_CASE_FILE = re.compile(r"^avn_\d{3,}(_0000)?\.nii\.gz$")


def synthesize(
    out: Path,
    n_cases: int = 40,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    domain: str = DEFAULT_DOMAIN,
) -> Dataset:
    """Write the phantom dataset (nnU-Net raw layout + cases.json) to ``out`` and open it.

    ``out`` must be missing or empty unless ``force``: then the dataset files in it are
    overwritten, and phantom case files and a split left from an earlier dataset are removed.
    ``shape`` is in voxels (z y x); ``domain`` names the acquisition domain
    (:data:`~.domains.DOMAINS`). ``progress(done, total)`` is called after each case.
    """
    out = Path(out)
    acquisition = get_domain(domain)
    if n_cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {n_cases}")
    shape = check_shape(shape)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; choose a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"{out} is not empty; choose a new folder, or pass --force to overwrite its dataset files"
        )
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if force:
        keep = {f"avn_{i:03d}" for i in range(n_cases)}
        for sub in ("imagesTr", "labelsTr"):
            for f in (out / sub).iterdir():
                if _CASE_FILE.match(f.name) and f.name.split(".")[0].removesuffix("_0000") not in keep:
                    f.unlink()
        for name in (SPLITS_FILE, SPLITS_META_FILE, CASES_FILE):
            (out / name).unlink(missing_ok=True)

    metas = []
    for i in range(n_cases):
        case = generate_case(plan_case(i), shape, seed, acquisition)
        write_case(out, case)
        metas.append(case.meta)
        if progress is not None:
            progress(i + 1, n_cases)
    name = dataset_name(n_cases, seed, shape, acquisition.name)
    write_dataset_json(out, name, n_cases, synthetic=True)
    write_cases_file(out, CasesFile(
        name=name,
        synthetic=True,
        description=(
            f"Synthetic AVN hip MRI phantom {PHANTOM_VERSION} (avnbench data synth): {n_cases} "
            f"cases, seed {seed}, acquisition domain {acquisition.name} ({acquisition.title}), "
            f"{shape[0]}x{shape[1]}x{shape[2]} voxels of "
            + "x".join(f"{s:.3g}" for s in spacing_for(shape))
            + " mm (z y x). Not clinical data."
        ),
        cases=metas,
    ))
    return load_dataset(out)
