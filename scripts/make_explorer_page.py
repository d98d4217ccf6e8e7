"""Re-creates docs/explorer/explorer.html and docs/images/explorer.png: the
attention explorer of the demo's SCAN on the built-in world.

The demo's SCAN (its preset, seed 0) is trained on the built-in world, as
`scan-keras demo` and scripts/make_query_figure.py train it (about two
minutes on two CPU cores, JAX; `--work-dir` keeps them), unless `--model` and `--data-dir` name a
model and world already trained, such as a demo's output folder:

    KERAS_BACKEND=jax python scripts/make_explorer_page.py
    python scripts/make_explorer_page.py --model scan_keras_demo/scan/model_best.keras \\
        --data-dir scan_keras_demo/world

The page holds the first 100 test images and their 500 captions. With
`--rerender`, the page's stored data are written again with the package's
current script and style sheet, with no model (tests/test_explorer.py
checks that the page is current). The screenshot needs Chromium and
selenium (tests/browser.py).
"""

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "explorer", "explorer.html")
SCREENSHOT = os.path.join(ROOT, "docs", "images", "explorer.png")


def _train(folder, seed):
    import keras

    from scan_keras.data.world import write_world
    from scan_keras.demo import DEMO_PRESET
    from scan_keras.models import SCAN
    from scan_keras.training import BEST_MODEL, train

    data_dir, run_dir = os.path.join(folder, "world"), os.path.join(folder, "run")
    write_world(data_dir, seed=seed)
    train(DEMO_PRESET, data_dir, run_dir, seed=seed, verbose=2, model_class=SCAN, workers=2)
    return keras.saving.load_model(os.path.join(run_dir, BEST_MODEL)), data_dir


def _screenshot(page, path):
    """The page in a headless Chromium, with a content word chosen."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from browser import open_browser, script_errors
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = open_browser(width=1200, height=1000)
    try:
        driver.get("file://" + os.path.abspath(page))
        # The page opens on the word whose attention is sharpest: hover it.
        word = driver.find_element(By.CSS_SELECTOR, "#words button.active")
        ActionChains(driver).move_to_element(word).perform()
        errors = script_errors(driver)
        if errors:
            raise RuntimeError(f"script errors in {page}: {errors}")
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1200, min(height + 120, 1400))
        driver.save_screenshot(path)
    finally:
        driver.quit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=PAGE)
    parser.add_argument("--screenshot", default=SCREENSHOT)
    parser.add_argument("--model", help="a trained SCAN (.keras) instead of training one")
    parser.add_argument("--data-dir", help="its world folder (with --model)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir",
                        help="where the world and the run are written (a temporary folder)")
    parser.add_argument("--rerender", action="store_true",
                        help="write the page's stored data again with the current assets")
    args = parser.parse_args()
    from scan_keras.explorer import read_explorer_data, render_page, write_explorer

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if args.rerender:
        page = render_page(read_explorer_data(args.out))
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page)
    elif args.model:
        import keras

        import scan_keras  # noqa: F401  (registers the package's classes)

        if not args.data_dir:
            parser.error("--model needs --data-dir")
        model = keras.saving.load_model(args.model)
        write_explorer(model, args.data_dir, "test", args.out, images=args.images)
    elif args.work_dir:
        model, data_dir = _train(args.work_dir, args.seed)
        write_explorer(model, data_dir, "test", args.out, images=args.images)
    else:
        with tempfile.TemporaryDirectory() as folder:
            model, data_dir = _train(folder, args.seed)
            write_explorer(model, data_dir, "test", args.out, images=args.images)
    print(f"written to {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    if args.screenshot:
        os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
        _screenshot(args.out, args.screenshot)
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
