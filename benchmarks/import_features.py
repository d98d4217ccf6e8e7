"""Speed and memory of `import_features` on a TSV file of a given size.

Writes a TSV file in the bottom-up-attention extractor's format (36 boxes
x 2048 random float32 features per image, about 0.4 MB a line) into a
temporary folder, imports it as one split (its image ids shuffled, so rows
are written all over the output), and prints a table: input size, images,
seconds, MB/s, and the import's resident memory.

The import runs in a fresh subprocess that does nothing else, so the
generator's memory does not count. Its peak resident memory (VmHWM, else
`ru_maxrss`) is shown beside its resident memory before the import starts
(Python, NumPy and the package's imports). The target: under 1 GB of peak
resident memory whatever the input size, since one line is held at a time
and the rows go to the output file by ordinary writes.

    python benchmarks/import_features.py                  # 2 GB of TSV
    python benchmarks/import_features.py --gigabytes 0.05 --tmp-dir /tmp

The folder needs about 1.75 times the TSV's size (the output's float32
take 3/4 of their base64). The subprocess uses Keras' numpy backend unless KERAS_BACKEND is set: the
import needs no Keras, but the package imports it.
"""

import argparse
import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np


def write_tsv(path, n_images, boxes=36, dim=2048, seed=0):
    """Writes `n_images` lines of the extractor's format; returns the ids."""
    rng = np.random.default_rng(seed)
    ids = np.arange(100_000, 100_000 + n_images)
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for image_id in ids:
            box = np.sort(rng.uniform(0, 500, (boxes, 4)), axis=1).astype(np.float32)
            features = rng.random((boxes, dim), dtype=np.float32)
            f.write(
                f"{image_id}\t640\t480\t{boxes}\t"
                f"{base64.b64encode(box.tobytes()).decode()}\t"
                f"{base64.b64encode(features.tobytes()).decode()}\n"
            )
    return ids.tolist()


# Images of MS-COCO 2014 (train 82,783 + val 40,504) that the extractor's
# trainval TSV covers.
COCO_IMAGES = 123_287


def line_bytes(boxes, dim):
    """Approximate size of one line: the two base64 fields and the rest."""
    return 4 * -(-(boxes * 4 * 4) // 3) + 4 * -(-(boxes * dim * 4) // 3) + 30


def memory_mb():
    """(current, peak) resident memory of this process, in MB."""
    status = {}
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    status[key] = int(value.split()[0]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes or kB
    return status.get("VmRSS", float("nan")), status.get("VmHWM", peak)


def child(args):
    """The subprocess: imports the package, then the features; prints JSON."""
    from scan_keras.data import import_features, read_image_ids

    ids = read_image_ids(args.ids)
    before, _ = memory_mb()
    summary = import_features(args.tsv, ids, args.out, "train", progress=False)
    _, peak = memory_mb()
    print(json.dumps({**summary, "rss_before_mb": before, "peak_rss_mb": peak}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="TSV size (2)")
    parser.add_argument("--tmp-dir", default=None, help="where the TSV and output go")
    parser.add_argument("--boxes", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument(
        "--json", help="also write the figures here (benchmarks/results/import_features.json "
        "holds the run the README quotes)",
    )
    # The subprocess's own arguments.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tsv", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    folder = tempfile.mkdtemp(prefix="import_features-", dir=args.tmp_dir)
    try:
        n_images = max(1, round(args.gigabytes * 1e9 / line_bytes(args.boxes, args.dim)))
        tsv = os.path.join(folder, "features.tsv")
        ids = write_tsv(tsv, n_images, args.boxes, args.dim)
        np.random.default_rng(1).shuffle(ids)
        ids_path = os.path.join(folder, "train_ids.txt")
        with open(ids_path, "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
        env = dict(os.environ)
        env.setdefault("KERAS_BACKEND", "numpy")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--tsv", tsv,
             "--ids", ids_path, "--out", os.path.join(folder, "out")],
            capture_output=True, text=True, env=env, check=False,
        )
        if result.returncode:
            sys.exit(f"The import failed:\n{result.stderr[-3000:]}")
        stats = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    gigabytes = stats["bytes"] / 1e9
    print(f"{args.boxes} boxes x {args.dim} features per image, "
          f"KERAS_BACKEND={env['KERAS_BACKEND']}, files in {folder}"
          + ("" if args.keep else " (removed)"))
    print("| input GB | images | seconds | MB/s | RSS before import MB | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    rate = stats["bytes"] / 1e6 / stats["seconds"]
    print(f"| {gigabytes:.3f} | {stats['images']} | {stats['seconds']:.1f} | "
          f"{rate:.0f} | {stats['rss_before_mb']:.0f} | {stats['peak_rss_mb']:.0f} |")
    # COCO's train + restval + val + test, 36 boxes each, at this rate.
    coco_gb = COCO_IMAGES * line_bytes(36, 2048) / 1e9
    coco_minutes = coco_gb * 1e3 / rate / 60
    print(f"A COCO-size TSV ({COCO_IMAGES:,} images, {coco_gb:.1f} GB) at this rate: "
          f"{coco_minutes:.0f} minutes (read from the page cache here; a cold disk "
          "may be slower).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "input_gb": round(gigabytes, 3), "images": stats["images"],
                "seconds": round(stats["seconds"], 1), "mb_per_s": round(rate),
                "rss_before_mb": round(stats["rss_before_mb"]),
                "peak_rss_mb": round(stats["peak_rss_mb"]),
                "coco_gb": round(coco_gb, 1), "coco_minutes": round(coco_minutes),
            }, f, indent=1)


if __name__ == "__main__":
    main()
