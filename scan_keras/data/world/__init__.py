"""The built-in world: rendered scenes of shapes, their regions and captions.

SCAN's central claim is that it learns which image region each word refers
to from matching (image, caption) pairs alone. Real datasets cannot show
it, for they hold no word-region ground truth. This world can: in the manner
of ShapeWorld and CLEVR it draws scenes whose full description is known,
and describes them in a small compositional language.

- **Scenes.** A 64 x 64 RGB image drawn with NumPy (anti-aliased) holds 2 to
  4 objects, each a shape (`SHAPES`) in a colour (`COLOURS`) and a size
  (`SIZES`), each at a place of its own, on a background of a muted colour
  gradient with a low-contrast noise texture.
- **Regions**, as a bottom-up detector proposes them: `n_regions` boxes per
  image, each object's box (jittered by a pixel) and distractors (crops of
  pure background, crops holding 15% to 35% of an object's pixels), in
  shuffled order. Each region's feature comes from its pixels, through the
  frozen CNN of `scan_keras.data.extractor`; no label ever enters a feature.
- **Captions**, five per image, each true of its image and naming 1 to 3 of
  its objects, from a grammar with synonyms ("square" / "box"), several
  templates and word orders, counts ("two red squares", said only when
  exactly two objects match) and relations ("left of", "above", ...,
  said only when one box lies wholly on that side of the other). A single
  object is always named by attributes that single it out in its image.
- **Ground truth.** For each colour, size and shape word of a caption, the
  region(s) it refers to: the full box region of its object, or of every
  object of a count phrase.

Splits come from independent seeded streams, one per split, and no scene
occurs twice across splits. Everything is NumPy, never a Keras op: the same
seed gives the same bytes on every run and every Keras backend.

The modules, each importing only those above it:

- `drawing`: the scenes' images and objects;
- `regions`: the region proposals of a scene;
- `grammar`: captions and their word-region ground truth;
- `checks`: checks of integer arguments;
- `splits`: `make_world`, `render_split`, `WorldSplit`, `scene_hash`;
- `io`: `write_world` and the `load_*` readers of its folder.
"""

from scan_keras.data.world.drawing import (
    COLOUR_JITTER,
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    SIZES,
)
from scan_keras.data.world.grammar import (
    COLOUR_WORDS,
    CONTENT_WORDS,
    COUNT_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
)
from scan_keras.data.world.io import (
    WORLD_MIN_COUNT,
    load_grounding,
    load_world_images,
    load_world_objects,
    write_world,
)
from scan_keras.data.world.regions import (
    REGION_BACKGROUND,
    REGION_OBJECT,
    REGION_PARTIAL,
)
from scan_keras.data.world.splits import (
    CAPTIONS_PER_IMAGE,
    WORLD_SPLIT_SIZES,
    WorldSplit,
    make_world,
    render_split,
    scene_hash,
)

# The name this constant had when the world was one module (tests read it).
_COLOUR_JITTER = COLOUR_JITTER

__all__ = [
    "CAPTIONS_PER_IMAGE",
    "COLOURS",
    "COLOUR_JITTER",
    "COLOUR_WORDS",
    "CONTENT_WORDS",
    "COUNT_WORDS",
    "IMAGE_SIZE",
    "REGION_BACKGROUND",
    "REGION_OBJECT",
    "REGION_PARTIAL",
    "RELATION_WORDS",
    "SHAPES",
    "SHAPE_WORDS",
    "SIZES",
    "SIZE_WORDS",
    "WORLD_MIN_COUNT",
    "WORLD_SPLIT_SIZES",
    "WorldSplit",
    "load_grounding",
    "load_world_images",
    "load_world_objects",
    "make_world",
    "render_split",
    "scene_hash",
    "write_world",
]
