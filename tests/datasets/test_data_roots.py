"""Datasets read nothing outside the data roots: every line of a text list, every link in a folder;
images are regular files of bounded size, decoded within bounded memory."""

from __future__ import annotations

import os
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.datasets.images import ImageLoadError, load_image
from kiln.datasets.pack import build_dataset
from kiln.datasets.sources import DatasetInputError, collect_images, parse_folder, parse_textfile
from kiln.datasets.spec import DatasetSpec
from kiln.paths import ReadPolicy
from kiln.reporting import RecordingReporter
from tests.datasets.conftest import folder_spec, make_classes, save

OUTSIDE = "is outside the folders this server may read"


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """root/ (the data root) with two classes of images, outside/ beside it with a secret image."""
    root = make_classes(tmp_path / "root" / "images", {"a": 3, "b": 3})
    outside = tmp_path / "outside"
    save(outside / "secret.png", np.full((5, 6, 3), 7, np.uint8))
    return {"root": tmp_path / "root", "images": root, "outside": outside}


def _list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_line_of_a_list_is_checked_against_the_roots(places: dict[str, Path]) -> None:
    root, images, outside = places["root"], places["images"], places["outside"]
    listing = _list(
        root / "train.txt",
        [
            f"{images}/a/000.png 0",
            "images/b/000.png 1",  # relative to the list's folder: inside
            "../../etc/passwd 0",  # traversal
            f"{outside}/secret.png 1",  # absolute, outside, exists
            f"{outside}/missing.png 1",  # absolute, outside, does not exist
            f"{images}/../../outside/secret.png 0",  # traversal from inside
        ],
    )
    os.symlink(outside / "secret.png", images / "a" / "link.png")
    with listing.open("a") as f:
        f.write(f"{images}/a/link.png 0\n")  # a link inside the roots that leads outside
    parsed = parse_textfile(listing, ["a", "b"], policy=ReadPolicy([root]))
    assert parsed.entries == [(str(images / "a" / "000.png"), 0), (str(images / "b" / "000.png"), 1)]
    refused = [line for line in parsed.bad_lines if OUTSIDE in line]
    assert [line.split(":")[0].split(" line ")[1] for line in refused] == ["3", "4", "5", "6", "7"]
    # the words do not tell an existing file outside from a missing one
    same = [re.sub(r"line \d+", "line N", line).replace("secret", "X").replace("missing", "X") for line in refused]
    assert same[1] == same[2]
    # unrestricted (loopback, no roots): the user's own files stay reachable
    assert len(parse_textfile(listing, ["a", "b"]).entries) == 7


def test_a_list_with_only_lines_outside_names_its_field(places: dict[str, Path]) -> None:
    listing = _list(places["root"] / "val.txt", [f"{places['outside']}/secret.png 0", "/etc/passwd 1"])
    with pytest.raises(DatasetInputError) as err:
        parse_textfile(listing, ["a", "b"], field_name="textfile_val_images", policy=ReadPolicy([places["root"]]))
    assert err.value.field == "textfile_val_images" and OUTSIDE in err.value.message


def test_the_list_files_themselves_obey_the_rule(places: dict[str, Path]) -> None:
    labels = _list(places["outside"] / "labels.txt", ["a", "b"])
    listing = _list(places["root"] / "train.txt", [f"{places['images']}/a/000.png 0"])
    spec = DatasetSpec(method="textfile", textfile_labels_file=str(labels), textfile_train_images=str(listing))
    spec.textfile_use_val = False
    with pytest.raises(DatasetInputError) as err:
        collect_images(spec, policy=ReadPolicy([places["root"]]))
    assert err.value.field == "textfile_labels_file" and OUTSIDE in err.value.message
    os.mkfifo(places["root"] / "fifo.txt")
    spec.textfile_labels_file = str(places["root"] / "fifo.txt")
    with pytest.raises(DatasetInputError, match="FIFO"):
        collect_images(spec)  # unrestricted, yet a FIFO is never opened for reading
    big = _list(places["root"] / "big.txt", ["a", "b" * 2000])
    spec.textfile_labels_file = str(big)
    with pytest.raises(DatasetInputError, match="KILN_MAX_IMAGE_MB"):
        collect_images(spec, policy=ReadPolicy(None, max_bytes=1000))


def test_links_in_a_folder_that_lead_outside_are_skipped(places: dict[str, Path]) -> None:
    images, outside = places["images"], places["outside"]
    os.symlink(outside / "secret.png", images / "a" / "secret.png")
    make_classes(outside / "more", {"c": 2})
    os.symlink(outside / "more" / "c", images / "b" / "linked_dir")
    os.symlink(images / "a" / "000.png", images / "b" / "inside_link.png")  # stays inside: kept
    parsed = parse_folder(images, 1, None, roots=[places["root"]])
    found = [p for ps in parsed.images for p in ps]
    assert all(Path(p).is_relative_to(images) for p in found), found
    assert len(parsed.images[0]) == 3 and len(parsed.images[1]) == 4  # b: 3 + the link to a/000.png
    assert any("2 links" in w and "KILN_DATA_ROOTS" in w for w in parsed.warnings), parsed.warnings
    unrestricted = parse_folder(images, 1, None)
    assert sum(len(ps) for ps in unrestricted.images) == len(found) + 3  # secret.png and c's two images


def test_a_folder_outside_the_roots_is_refused(places: dict[str, Path]) -> None:
    os.symlink(places["outside"], places["root"] / "elsewhere")
    with pytest.raises(DatasetInputError, match=OUTSIDE):
        parse_folder(places["root"] / "elsewhere", 1, None, roots=[places["root"]])


def test_a_built_dataset_holds_nothing_from_outside(places: dict[str, Path], tmp_path: Path) -> None:
    """The packed pixels (what the explorer serves) and errors.log never see a file outside."""
    images, outside = places["images"], places["outside"]
    lines = [f"{images}/{c}/{i:03d}.png {n}" for n, c in enumerate("ab") for i in range(3)]
    lines += [f"{outside}/secret.png 0", f"{outside}/missing.png 1", "../../../../../../etc/passwd 0"]
    listing = _list(places["root"] / "train.txt", lines)
    labels = _list(places["root"] / "labels.txt", ["a", "b"])
    spec = DatasetSpec(
        dataset_name="d",
        method="textfile",
        textfile_labels_file=str(labels),
        textfile_train_images=str(listing),
        textfile_use_val=False,
        resize_width=6,
        resize_height=5,
    )
    job = tmp_path / "job"
    manifest = build_dataset(spec, job, RecordingReporter(), workers=1, policy=ReadPolicy([places["root"]]))
    assert manifest["splits"]["train"]["count"] == 6 and manifest["error_count"] == 0
    secret = (job / "train.txt").read_text() if (job / "train.txt").exists() else ""
    assert "secret" not in secret
    assert not any("secret" in str(e) for e in manifest["errors"])
    warnings = manifest["parse"]["warnings"]
    assert sum(OUTSIDE in w for w in warnings) == 3


def test_a_fifo_or_device_in_a_dataset_is_an_error_not_a_hang(places: dict[str, Path], tmp_path: Path) -> None:
    images = places["images"]
    os.mkfifo(images / "a" / "pipe.png")
    os.symlink("/dev/zero", images / "b" / "zero.png")
    manifest = build_dataset(folder_spec(images, folder_pct_val=0), tmp_path / "job", RecordingReporter(), workers=1)
    messages = " ".join(e["message"] for e in manifest["errors"])
    assert manifest["error_count"] == 2 and "FIFO" in messages and "character device" in messages


def test_image_bytes_are_capped(tmp_path: Path) -> None:
    path = save(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert load_image(path, 3).shape == (64, 64, 3)
    with pytest.raises(ImageLoadError, match="KILN_MAX_IMAGE_MB"):
        load_image(path, 3, max_bytes=100)


# ---------------------------------------------------------------- decoding within bounds


def _sixteen_bit_png(path: Path, height: int, width: int) -> Path:
    values = np.zeros((height, width), np.uint16)
    values[:, : width // 2] = 65535
    values[0, :4] = [0, 128, 129, 30000]
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    image.save(path)
    return path


def test_sixteen_bit_images_decode_without_a_float64_copy(tmp_path: Path) -> None:
    """A 16-bit PNG of a few hundred KB once took 2.1 GB: no whole-image float64 copy any more."""
    height, width = 1500, 2000
    path = _sixteen_bit_png(tmp_path / "deep.png", height, width)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        image = load_image(path, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = height * width
    # the uint16 copy (2 bytes a pixel) and the uint8 result (1) plus bounded blocks; a float64
    # copy alone would be 8 bytes a pixel
    assert peak < 4 * pixels, f"{peak / pixels:.1f} bytes per pixel"
    assert image.shape == (height, width, 1)
    assert image[0, :4, 0].tolist() == [0, 0, 1, 117]  # round(x / 257): 128 -> 0.498, 129 -> 0.502
    assert image[1, 0, 0] == 255 and image[1, -1, 0] == 0


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path: Path) -> None:
    path = _sixteen_bit_png(tmp_path / "deep.png", 200, 300)
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match="over the limit"):
            load_image(path, 1, max_pixels=50_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60_000 * 2  # never decoded
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 50_000_000
