"""The project's one image reader and one image writer.

:func:`read_image` reads an image file (NIfTI, NRRD, MHA) or a DICOM series folder and gives a
3-D, single-channel SimpleITK image whose voxels are the file's, or a one-line DataError naming
the path: missing, empty (0 bytes), unsupported, unreadable, truncated (gzip stream or voxel
block; ITK's NIfTI reader fills a truncated file with zeros), non-finite values (ITK's NIfTI
reader turns NaN into 0), wrong dimension or components, a DICOM series with a missing slice
(ITK would average the spacing over the gap) and, with ``kind="label"``, label values outside
{0, 1, 2}. ITK's own messages on stderr are caught and folded into that line.

A NIfTI file is decompressed once, here: its voxels are checked and handed to SimpleITK with the
grid ITK reads from the header, so a checked read costs about what ``sitk.ReadImage`` costs.

:func:`write_image` writes through a temporary name in the target's folder, reads the result
back (size, header, and for NIfTI the whole gzip stream), and only then renames it into place:
SimpleITK does not raise when a write fails (a full disk leaves a 0-byte or truncated file).
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from avnbench.data.files import os_reason, temporary_sibling
from avnbench.data.image_checks import intensity_problem, label_value_problem, nonfinite_problem
from avnbench.errors import DataError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
ImageKind = Literal["image", "label"]
#: Slice positions of a DICOM series may differ from even spacing by this fraction of a step.
SLICE_SPACING_RTOL = 0.01

# NIfTI datatype codes → numpy type codes (the scalar types SimpleITK reads).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_WRITE_HINT = "the disk may be full or the folder not writable"


def read_image(path: Path | str, *, kind: ImageKind = "image"):
    """Read an image file or DICOM series folder as a checked 3-D single-channel SimpleITK image.

    ``kind="image"``: intensities must be finite. ``kind="label"``: values must also be in
    {0, 1, 2}. Every problem is a one-line DataError that names ``path``.
    """
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's warnings would bypass our one line
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
        checked_values = False
    else:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read ({os_reason(e)})") from None
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(
                f"{path}: unsupported image format; use NIfTI (.nii, .nii.gz), NRRD, MHA or a "
                "DICOM series folder"
            )
        if size == 0:
            raise DataError(f"{path}: empty file (0 bytes); the file is damaged or incomplete, copy or export it again")
        if path.name.lower().endswith((".nii", ".nii.gz")):
            image, checked_values = _read_nifti(path)
        else:
            image, checked_values = _read_with_itk(path), False
    if image.GetDimension() != 3:
        raise DataError(f"{path}: a {image.GetDimension()}-D image; a 3-D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a single-channel (grey) image is needed"
        )
    array = sitk.GetArrayViewFromImage(image)
    problem = None if checked_values else intensity_problem(array)
    if problem is None and kind == "label":
        problem = label_value_problem(array)
    if problem:
        raise DataError(f"{path}: {problem}")
    return image


def write_image(image, path: Path | str, *, compression_level: int | None = None) -> Path:
    """Write a SimpleITK image to ``path`` (compressed where the format allows), atomically.

    The file is written under a temporary name in the same folder, checked (not empty, header
    readable, size as written, NIfTI gzip stream complete) and renamed over ``path``; on any
    failure the temporary file is removed, ``path`` is left as it was and a one-line DataError
    says the disk may be full or the folder not writable."""
    path = Path(path)
    name = path.name.lower()
    suffix = next((s for s in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd") if name.endswith(s)), None)
    if suffix is None:
        raise DataError(f"{path}: unsupported image format to write; use .nii.gz, .nii, .nrrd or .mha")
    partial = temporary_sibling(path, suffix)
    try:
        with _native_stderr_captured() as native:
            try:
                _itk_write(image, partial, compression_level)
                error = None
            except RuntimeError as e:
                error = e
        if error is not None:
            raise DataError(f"{path}: cannot write image ({_itk_reason(error, ''.join(native), partial)}); {_WRITE_HINT}")
        problem = _written_problem(image, partial)
        if problem:
            raise DataError(f"{path}: writing failed ({problem}); {_WRITE_HINT}")
        os.replace(partial, path)
    except OSError as e:
        raise DataError(f"{path}: cannot write image ({os_reason(e)}); {_WRITE_HINT}") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _itk_write(image, path: Path, compression_level: int | None) -> None:
    """The one place that calls SimpleITK's writer (tests replace it to simulate a full disk)."""
    import SimpleITK as sitk

    if compression_level is None:
        sitk.WriteImage(image, str(path), True)
    else:
        sitk.WriteImage(image, str(path), True, compression_level)


def _written_problem(image, path: Path) -> str | None:
    """Why the file just written is not ``image`` (empty, unreadable header, other size), or None."""
    import SimpleITK as sitk

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "no file was written"
    if size == 0:
        return "0 bytes written"
    if path.name.lower().endswith((".nii", ".nii.gz")):
        try:
            payload = _nifti_payload(path)
        except DataError as e:
            return str(e).split(": ", 1)[-1]
        if payload is not None and tuple(int(d) for d in payload[1]) != tuple(image.GetSize()):
            return f"size {payload[1]} written, {image.GetSize()} expected"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _native_stderr_captured():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return "the written header cannot be read back"
    if tuple(reader.GetSize()) != tuple(image.GetSize()):
        return f"size {reader.GetSize()} written, {image.GetSize()} expected"
    return None


# ----------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path):
    """(image, values checked?) of a NIfTI file, decompressed once and checked for truncation
    and non-finite values; SimpleITK reads the header (grid, pixel type) itself."""
    import SimpleITK as sitk

    payload = _nifti_payload(path)
    if payload is not None and payload[0].dtype.kind == "f":
        finite = np.isfinite(payload[0])
        if not finite.all():
            n_nan = int(np.isnan(payload[0]).sum())
            raise DataError(f"{path}: {nonfinite_problem(n_nan, int((~finite).sum()) - n_nan)}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _native_stderr_captured() as native:
        try:
            reader.ReadImageInformation()
            error = None
        except RuntimeError as e:
            error = e
    if error is not None:
        raise DataError(f"{path}: cannot read image ({_itk_reason(error, ''.join(native), path)})")
    if payload is not None and payload[2] and reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1:
        voxels, size_xyz, _ = payload
        if tuple(reader.GetSize()) == tuple(size_xyz):
            image = sitk.GetImageFromArray(voxels.astype(voxels.dtype.newbyteorder("="), copy=False).reshape(size_xyz[::-1]))
            if image.GetPixelID() == reader.GetPixelID():
                image.SetSpacing(reader.GetSpacing())
                image.SetOrigin(reader.GetOrigin())
                image.SetDirection(reader.GetDirection())
                return image, True
    # Anything unusual (scaled voxels, 4-D, vectors): ITK reads it again, our checks still held.
    return _read_with_itk(path), payload is not None and payload[0].dtype.kind == "f"


def _read_with_itk(path: Path):
    import SimpleITK as sitk

    with _native_stderr_captured() as native:
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as e:
            error = e
    raise DataError(f"{path}: cannot read image ({_itk_reason(error, ''.join(native), path)})")


def _nifti_payload(path: Path) -> tuple[np.ndarray, tuple[int, ...], bool] | None:
    """(voxel block as a flat array, size x y z..., plain 3-D unscaled?) of a NIfTI-1/2 file, or
    None when its header is not NIfTI or its data type has no numpy equivalent here (ITK then
    says what it makes of it). A truncated or corrupt file is a one-line DataError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({os_reason(e)})") from None
    if path.name.lower().endswith(".gz"):
        if raw[:2] != b"\x1f\x8b":
            raise DataError(f"{path}: not gzip-compressed although named .gz; the file is damaged or misnamed")
        raw = _gunzip(raw, path)
    for order in ("<", ">"):
        if len(raw) < 4:
            return None
        header_size = int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0])
        if header_size == 348 and len(raw) >= 348:  # NIfTI-1
            code = int(np.frombuffer(raw[70:72], dtype=f"{order}i2")[0])
            dims = np.frombuffer(raw[40:56], dtype=f"{order}i2").astype(np.int64)
            offset = int(np.frombuffer(raw[108:112], dtype=f"{order}f4")[0])
            slope, inter = np.frombuffer(raw[112:120], dtype=f"{order}f4").astype(float)
            break
        if header_size == 540 and len(raw) >= 540:  # NIfTI-2
            code = int(np.frombuffer(raw[12:14], dtype=f"{order}i2")[0])
            dims = np.frombuffer(raw[16:80], dtype=f"{order}i8").astype(np.int64)
            offset = int(np.frombuffer(raw[168:176], dtype=f"{order}i8")[0])
            slope, inter = np.frombuffer(raw[176:192], dtype=f"{order}f8").astype(float)
            break
    else:
        return None
    dtype = _NIFTI_DTYPES.get(code)
    if dtype is None or not 1 <= dims[0] <= 7 or offset < 0:
        return None
    size = tuple(max(int(d), 1) for d in dims[1 : 1 + dims[0]])
    n_voxels = int(np.prod(size))
    needed = offset + n_voxels * np.dtype(dtype).itemsize
    if len(raw) < needed:
        raise DataError(f"{path}: truncated: {max(len(raw) - offset, 0)} of {needed - offset} bytes of voxel data")
    voxels = np.frombuffer(raw, dtype=np.dtype(order + dtype), count=n_voxels, offset=offset)
    unscaled = slope in (0.0, 1.0) and inter == 0.0 or not np.isfinite(slope)
    return voxels, size, bool(unscaled and dims[0] == 3)


def _gunzip(raw: bytes, path: Path) -> bytes:
    """All members of a gzip stream; a stream that ends early or fails its CRC is a DataError."""
    parts = []
    while raw:
        stream = zlib.decompressobj(wbits=31)
        try:
            parts.append(stream.decompress(raw))
        except zlib.error:
            raise DataError(f"{path}: corrupt gzip stream; the file is damaged or incomplete") from None
        if not stream.eof:
            raise DataError(f"{path}: truncated or corrupt gzip stream; the file is damaged or incomplete")
        raw = stream.unused_data if stream.unused_data[:2] == b"\x1f\x8b" else b""
    return b"".join(parts)


# ----------------------------------------------------------------------------- DICOM


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    with _native_stderr_captured():
        series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: no DICOM series in this folder")
    if len(series) > 1:
        raise DataError(
            f"{folder}: {len(series)} DICOM series in one folder; put each series in its own "
            "folder and name that one in the manifest"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    if len(files) < 2:
        raise DataError(f"{folder}: the DICOM series has {len(files)} slice; a 3-D volume is needed")
    _check_slice_positions(folder, files)
    reader.SetFileNames(files)
    with _native_stderr_captured() as native:
        try:
            image, error = reader.Execute(), None
        except RuntimeError as e:
            image, error = None, e
    if error is not None:
        raise DataError(f"{folder}: cannot read DICOM series ({_itk_reason(error, ''.join(native), folder)})")
    return image


def _check_slice_positions(folder: Path, files) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a missing or
    duplicated slice): ITK would read it on an averaged spacing, misplacing every slice."""
    import SimpleITK as sitk

    positions = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        with _native_stderr_captured():
            try:
                reader.ReadImageInformation()
                ipp = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
                iop = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
            except (RuntimeError, ValueError):
                return  # no usable position tags: nothing to compare, ITK decides
        normal = np.cross(iop[:3], iop[3:6])
        positions.append(float(np.dot(ipp, normal)))
    steps = np.diff(np.asarray(positions))
    typical = float(np.median(np.abs(steps)))
    off = np.abs(np.abs(steps) - typical) > SLICE_SPACING_RTOL * max(typical, 1e-6)
    if typical == 0 or off.any():
        k = int(np.argmax(off)) if off.any() else 0
        raise DataError(
            f"{folder}: DICOM slices are not evenly spaced: {abs(steps[k]):.3g} mm between "
            f"{Path(files[k]).name} and {Path(files[k + 1]).name} where the others are "
            f"{typical:.3g} mm apart (a missing or duplicated slice); export the complete series"
        )


# ----------------------------------------------------------------------------- ITK messages


@contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Send what C++ code (ITK, MetaIO, GDCM) prints on file descriptor 2 to a buffer, so the
    user sees our one line instead; the text is in the yielded list afterwards."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            captured.append(buffer.read().decode(errors="replace"))


def _itk_reason(error: RuntimeError, native: str, path: Path) -> str:
    """The informative part of an ITK error, without file/line noise or the path."""
    lines = [line.strip() for line in native.splitlines() if line.strip()]
    for line in str(error).splitlines():
        line = line.strip()
        for marker in ("ITK ERROR:", "sitk::ERROR:"):
            if marker in line:
                line = line.split(marker, 1)[1].strip()
                if line.startswith(("MetaImageIO(", "NiftiImageIO(", "NrrdImageIO(", "GDCMImageIO(")):
                    line = line.split("): ", 1)[-1]
                lines.append(line)
    reason = "; ".join(dict.fromkeys(lines)) or "unreadable"
    return reason.replace(f'"{path}"', "the file").replace(str(path), "the file")
