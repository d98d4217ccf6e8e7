"""What the fused Pallas kernel asks of a GPU, found without one.

For each tile shape, the kernel (`implementation="pallas"`) is lowered to Triton IR
for CUDA at the 1K shape (this needs only JAX), then compiled for an H100
(sm_90) by the `triton` package's compiler and read back with `cuobjdump`:
the registers a thread uses, its stack in bytes (registers spilled to
memory) and the shared memory a program needs. A tile that needs more shared memory than the GPU
has cannot run; spills slow the kernel down; fewer registers let more
programs share a multiprocessor. The table is printed last.

Needs `pip install triton` (not a dependency of scan-keras); with
`--ir-only` it only lowers and counts the IR's lines. The Triton that XLA
uses on the GPU machine is its own, so the figures are a guide, not a
promise.

    python benchmarks/kernel_resources.py
    python benchmarks/kernel_resources.py --tiles 4x32w4 4x64w8 --dtypes float32
"""

import argparse
import functools
import os
import subprocess
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

H100_SHARED_MEMORY = 227 * 1024  # bytes a program may use on an H100 (sm_90)


def triton_ir(cross_attn, product_dtype, tiles, n_images, n_captions, n_words):
    """The kernel's Triton module, as text, lowered for CUDA on any machine."""
    import jax
    import jax.numpy as jnp
    from jax._src.pallas.triton import pallas_call_registration

    from scan_keras.layers.pallas import kernel as pallas_attention, tiles as pallas_tiles

    modules = []
    lower = pallas_call_registration.lowering.lower_jaxpr_to_triton_module

    def keep(*args, **kwargs):
        result = lower(*args, **kwargs)
        modules.append(result.module.operation.get_asm(enable_debug_info=False))
        return result

    scores = jax.jit(
        functools.partial(
            pallas_attention.similarities,
            cross_attn=cross_attn,
            product_dtype=product_dtype,
            tiles=tiles,
            interpret=False,
        )
    )
    shapes = [
        ((n_images, 36, 1024), jnp.float32),
        ((n_captions, n_words, 1024), jnp.float32),
    ]
    # JAX's private lowering hook: the IR is otherwise only printed.
    pallas_call_registration.lowering.lower_jaxpr_to_triton_module = keep
    try:
        scores.trace(*[jax.ShapeDtypeStruct(s, d) for s, d in shapes]).lower(
            lowering_platforms=("cuda",)
        )
    finally:
        pallas_call_registration.lowering.lower_jaxpr_to_triton_module = lower
    (module,) = modules
    return module


def compile_for_h100(ir, num_warps, num_stages):
    """Registers a thread, stack bytes (spills) and shared memory of `ir`
    compiled for sm_90, as `cuobjdump` reads them from the binary."""
    import glob

    import triton
    from triton.backends.compiler import GPUTarget

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ttir")
        with open(path, "w") as f:
            f.write(ir)
        kernel = triton.compile(
            path,
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": num_warps, "num_stages": num_stages},
        )
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        nvidia = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia")
        (cuobjdump,) = glob.glob(os.path.join(nvidia, "bin", "cuobjdump"))
        report = subprocess.run(
            [cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True
        ).stdout
    # "REG:245 STACK:0 SHARED:1024 LOCAL:0 ..." (SHARED: the static part;
    # Triton's dynamic shared memory is in its metadata).
    usage = dict(
        field.split(":", 1) for field in report.split() if field.startswith(("REG:", "STACK:"))
    )
    return int(usage["REG"]), int(usage["STACK"]), kernel.metadata.shared


def main():
    from scan_keras.layers.pallas import kernel as pallas_attention, tiles as pallas_tiles

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", nargs="+",
                        default=["4x32w4", "4x32w8", "4x64w4", "4x64w8", "4x64w16",
                                 "4x128w8", "8x64w8"],
                        help="images x words a tile, w: warps, s: stages")
    parser.add_argument("--cross-attn", nargs="+", default=["t2i", "i2t"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--ir-only", action="store_true",
                        help="lower to Triton IR only (no triton package needed)")
    args = parser.parse_args()

    rows = []
    for text in args.tiles:
        tiles = {**pallas_tiles.DEFAULT_TILES, **pallas_tiles.parse_tiles(text)}
        for dtype in args.dtypes:
            for cross_attn in args.cross_attn:
                ir = triton_ir(cross_attn, None if dtype == "float32" else dtype,
                               tiles, args.images, args.captions, args.words)
                if args.ir_only:
                    rows.append((text, dtype, cross_attn, len(ir.splitlines()), "", "", ""))
                    continue
                try:
                    registers, spilled, shared = compile_for_h100(
                        ir, tiles["num_warps"], tiles["num_stages"]
                    )
                except Exception as error:  # noqa: BLE001
                    rows.append((text, dtype, cross_attn, "", "failed", "",
                                 f"{type(error).__name__}"))
                    continue
                fits = "yes" if shared <= H100_SHARED_MEMORY else "NO"
                rows.append((text, dtype, cross_attn, registers, spilled,
                             shared // 1024, fits))
                print(f"{text} {dtype} {cross_attn}: {registers} registers, "
                      f"{spilled} B of stack, {shared // 1024} KB shared", flush=True)
    if args.ir_only:
        print("| tiles | dtype | attn | IR lines |")
        print("| --- | --- | --- | ---: |")
        for text, dtype, cross_attn, lines, *_ in rows:
            print(f"| {text} | {dtype} | {cross_attn} | {lines} |")
        return
    print("\nH100 (sm_90), Triton", _triton_version(), "| defaults:",
          pallas_tiles.DEFAULT_TILES)
    print("| tiles | dtype | attn | registers | stack (B) | shared (KB) | fits |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def _triton_version():
    import triton

    return triton.__version__


if __name__ == "__main__":
    main()
