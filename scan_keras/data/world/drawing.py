"""Drawing the world's scenes: shapes in colours and sizes on textured backgrounds.

Everything is NumPy, anti-aliased by supersampling: the same generator
state draws the same bytes on every run.
"""

import numpy as np

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
# Saturated colours, far from each other and from the muted backgrounds.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 225, 30),
    "green": (30, 170, 50),
    "cyan": (30, 215, 225),
    "blue": (35, 65, 225),
    "purple": (150, 40, 205),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")

# Object radii in pixels (a shape's half-width); the ranges leave a gap,
# so that "small" and "large" are never in doubt.
_RADII = {"small": (5.0, 6.0), "large": (10.0, 12.0)}
_GAP = 3  # pixels at least between the extents of two objects
_SUPERSAMPLE = 4  # sub-pixel samples per axis, for anti-aliasing
# A drawn object's colour: its `COLOURS` entry plus up to this much per channel.
COLOUR_JITTER = 10
_DUPLICATE_RATE = 0.3  # a new object copies an earlier one's shape ...
_DUPLICATE_COLOUR_RATE = 0.6  # ... and then, this often, its colour too


def _star(points=5, inner=0.42):
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1)


# Polygons in units of the radius, y pointing down.
_TRIANGLE = np.array([[0.0, -1.0], [1.0, 0.75], [-1.0, 0.75]])
_STAR = _star()


def _inside_polygon(u, v, vertices):
    """Even-odd rule: is each point (u, v) inside the polygon?"""
    u, v = np.broadcast_arrays(u, v)
    inside = np.zeros(u.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (ya > v) != (yb > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = xa + (xb - xa) * (v - ya) / (yb - ya)
        inside ^= crosses & (u < x_at)
    return inside


def _inside(shape, u, v):
    """Is each point (u, v), in units of the radius from the centre, inside?"""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 1.0)) | ((av <= 0.32) & (au <= 1.0))
    if shape == "triangle":
        return _inside_polygon(u, v, _TRIANGLE)
    return _inside_polygon(u, v, _STAR)


def _coverage(shape, cx, cy, radius, size):
    """The fraction of each pixel the shape covers, on the pixels near it.

    Returns:
        `(x0, y0, alpha)`: alpha `(h, w)` covers pixels `y0:y0 + h`,
        `x0:x0 + w`; pixel (x, y) spans [x, x + 1) x [y, y + 1).
    """
    x0 = max(int(np.floor(cx - radius)), 0)
    y0 = max(int(np.floor(cy - radius)), 0)
    x1 = min(int(np.ceil(cx + radius)), size)
    y1 = min(int(np.ceil(cy + radius)), size)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + sub).reshape(-1)
    u, v = (xs[None, :] - cx) / radius, (ys[:, None] - cy) / radius
    inside = _inside(shape, u, v)
    # Average the sub-pixel samples of each pixel: (y, sy, x, sx) -> (y, x).
    alpha = inside.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE)
    return x0, y0, alpha.mean(axis=(1, 3))


def _interpolation_matrix(n_out, n_in):
    """Linear interpolation from `n_in` evenly spaced knots to `n_out` points."""
    positions = np.linspace(0, n_in - 1, n_out)
    knots = np.arange(n_in)
    return np.stack([np.interp(positions, knots, row) for row in np.eye(n_in)], 1)


_SMOOTH = _interpolation_matrix(IMAGE_SIZE, 5)


def _background(rng, size):
    """A muted two-colour gradient with smooth and fine low-contrast noise."""
    grey = rng.uniform(70, 150)
    start = grey + rng.uniform(-15, 15, 3)
    end = start + rng.uniform(-35, 35) + rng.uniform(-10, 10, 3)
    angle = rng.uniform(0, 2 * np.pi)
    centred = np.arange(size) + 0.5 - size / 2
    along = centred[None, :] * np.cos(angle) + centred[:, None] * np.sin(angle)
    image = start + (along / size + 0.5)[..., None] * (end - start)
    smooth = _SMOOTH @ rng.normal(0, 6, (5, 5)) @ _SMOOTH.T
    fine = rng.normal(0, 2.5, (size, size))
    return image + (smooth + fine)[..., None]


def _sample_attributes(rng, n_objects):
    """Shape, colour, size names of the objects; some repeat an earlier one."""
    while True:
        attributes = []
        for k in range(n_objects):
            if k and rng.random() < _DUPLICATE_RATE:
                shape, colour, _ = attributes[rng.integers(k)]
                if rng.random() >= _DUPLICATE_COLOUR_RATE:
                    colour = list(COLOURS)[rng.integers(len(COLOURS))]
            else:
                shape = SHAPES[rng.integers(len(SHAPES))]
                colour = list(COLOURS)[rng.integers(len(COLOURS))]
            attributes.append((shape, colour, SIZES[rng.integers(len(SIZES))]))
        # Four identical objects could only be named as "four ...", which
        # names more than 3 objects: draw again.
        if max(attributes.count(a) for a in attributes) <= 3:
            return attributes


def _place(rng, radii, size):
    """Centres for objects of these radii, their extents `_GAP` apart."""
    order = np.argsort(-np.asarray(radii), kind="stable")  # largest first
    for _ in range(100):
        centres = [None] * len(radii)
        for k in order:
            r = radii[k]
            for _ in range(100):
                c = rng.uniform(r + 1, size - 1 - r, 2)
                if all(
                    max(abs(c[0] - o[0]), abs(c[1] - o[1])) >= r + radii[j] + _GAP
                    for j, o in enumerate(centres)
                    if o is not None
                ):
                    centres[k] = c
                    break
            else:
                break  # no room left: start the scene's layout again
        else:
            return centres
    raise RuntimeError("Could not place the objects: this should not happen.")


def render_scene(rng, n_objects, size):
    """One scene: its image, objects, and per-pixel object coverage.

    Args:
        rng: a `np.random.Generator`, advanced by the call.
        n_objects: number of objects.
        size: side of the image in pixels.

    Returns:
        `(image, objects, cover, owner)`: uint8 `(size, size, 3)`; a list
        of dicts `{"shape", "colour", "size", "box"}`, `box` the tight box
        (x0, y0, x1, y1) of the drawn pixels; float `(size, size)`, how
        much of each pixel is an object; int64 `(size, size)`, which
        object (-1 for none).
    """
    attributes = _sample_attributes(rng, n_objects)
    radii = [rng.uniform(*_RADII[s]) for _, _, s in attributes]
    centres = _place(rng, radii, size)
    image = _background(rng, size)
    cover = np.zeros((size, size))  # how much of each pixel is an object
    owner = np.full((size, size), -1, dtype=np.int64)  # ... and which
    objects = []
    for k, ((shape, colour, size_name), r, (cx, cy)) in enumerate(
        zip(attributes, radii, centres)
    ):
        x0, y0, alpha = _coverage(shape, cx, cy, r, size)
        rgb = np.asarray(COLOURS[colour], float) + rng.uniform(
            -COLOUR_JITTER, COLOUR_JITTER, 3
        )
        h, w = alpha.shape
        patch = image[y0 : y0 + h, x0 : x0 + w]
        patch += alpha[..., None] * (rgb - patch)
        cover[y0 : y0 + h, x0 : x0 + w] += alpha
        owner[y0 : y0 + h, x0 : x0 + w][alpha > 0] = k
        ys, xs = np.nonzero(alpha)
        box = (
            x0 + int(xs.min()),
            y0 + int(ys.min()),
            x0 + int(xs.max()) + 1,
            y0 + int(ys.max()) + 1,
        )
        objects.append(
            {"shape": shape, "colour": colour, "size": size_name, "box": box}
        )
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, objects, cover, owner
