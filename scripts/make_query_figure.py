"""Re-creates docs/images/query.png: what `scan-keras query --explain` draws.

The demo's SCAN (its preset, seed 0) is trained on the built-in world; the
first test caption then ranks the test images, and the figure shows each of
its words' attention over the best image's regions, on the image itself
(the world's pictures stand in for photos). About two minutes on two CPU
cores (JAX).

    KERAS_BACKEND=jax python scripts/make_query_figure.py
"""

import argparse
import os
import tempfile

import keras

from scan_keras.data.world import write_world
from scan_keras.demo import DEMO_PRESET
from scan_keras.models import SCAN
from scan_keras.search import Collection
from scan_keras.training import BEST_MODEL, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "query.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        data_dir, run_dir = os.path.join(folder, "world"), os.path.join(folder, "run")
        write_world(data_dir, seed=args.seed)
        train(DEMO_PRESET, data_dir, run_dir, seed=args.seed, verbose=2,
              model_class=SCAN, workers=2)
        model = keras.saving.load_model(os.path.join(run_dir, BEST_MODEL))
        collection = Collection(model, data_dir, "test")
        caption = collection.split.captions[0]
        hits = collection.rank_images(caption, k=5)
        for hit in hits:
            print(f"{hit.rank}  image {hit.index}  score {hit.score:.4f}")
        collection.explain(hits[0].index, caption, path=args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
