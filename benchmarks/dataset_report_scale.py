"""Benchmark: the dataset report at 50,000 images -- its time and the size of its largest page.

A real dataset run on ``--photos`` photos (one shard) is repeated into ``--images`` rows (its shard
copied, its thumbnails linked under each image's number, the true classes spread over 1,000 classes
so every gallery and the accuracy table have their full size), then ``write_dataset_report`` runs.
Targets ("usable at 50,000 images"): no page holds more than PAGE_SIZE thumbnails, the summary page
stays small (under 1 MB), and the report costs well under a second per thousand images.

Run: .venv/bin/python benchmarks/dataset_report_scale.py [--images 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import convscope
from convscope import dataset
from convscope.dataset import shards
from convscope.dataset.report import PAGE_SIZE, write_dataset_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset_speed import make_photos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--photos", type=int, default=shards.SHARD_SIZE)
    args = parser.parse_args()
    model = convscope.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        photos, out = Path(tmp) / "photos", Path(tmp) / "out"
        photos.mkdir()
        make_photos(photos, args.photos)
        folder = dataset.run(model, photos, out)
        shard = pq.read_table(folder / "shard-00000.parquet")
        (folder / "shard-00000.parquet").unlink()
        thumbs = folder / "thumbs"
        originals = {i: thumbs / f"{i:06d}.jpg" for i in range(shard.num_rows)}
        for number, start in enumerate(range(0, args.images, shard.num_rows)):
            part = shard.slice(0, min(shard.num_rows, args.images - start))
            truth = pa.array([(start + i) % 1000 for i in range(part.num_rows)], pa.int32())
            top1 = [row[0] for row in part.column("top_classes").to_pylist()]
            part = part.set_column(part.schema.get_field_index("true_class"), "true_class", truth)
            part = part.set_column(part.schema.get_field_index("correct"), "correct",
                                   pa.array([t == p for t, p in zip(truth.to_pylist(), top1)]))
            pq.write_table(part, folder / f"shard-{number:05d}.parquet")
            for i in range(part.num_rows):
                target = thumbs / f"{start + i:06d}.jpg"
                if not target.exists():
                    os.link(originals[i], target)
        start = time.perf_counter()
        index = write_dataset_report(out, model.labels)
        seconds = time.perf_counter() - start
        pages = list((folder / "pages").iterdir())
        largest = max(pages, key=lambda p: p.stat().st_size)
        largest_kb, index_kb = largest.stat().st_size / 1024, index.stat().st_size / 1024
        most = max(p.read_text(encoding="utf-8").count("<img") for p in pages if "image-" not in p.name)
    print(f"{args.images} images: report {seconds:.1f} s ({1000 * seconds / args.images:.2f} s per thousand), "
          f"{len(pages)} pages, the largest {largest_kb:.0f} KB ({largest.name}), "
          f"at most {most} thumbnails on a page, index.html {index_kb:.0f} KB")
    ok = most <= PAGE_SIZE and index_kb < 1024 and seconds / args.images < 1e-3
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
