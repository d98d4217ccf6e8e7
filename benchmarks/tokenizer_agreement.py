"""How often the package's own tokenizer splits a caption as nltk does.

The reference code split captions with nltk's `word_tokenize`; scan-keras
offers it (`"nltk"`, `"nltk_punkt"`) and a regular expression that needs
nothing (`"regex"`). This script writes a corpus of varied captions, in
the style of Flickr30K and COCO, with the things tokenizers disagree on
(quotes, ellipses, contractions, hyphens, numbers, several sentences,
non-ASCII letters), and prints, per kind of caption, the share that the
regular expression splits exactly as nltk's word tokenizer:

    python benchmarks/tokenizer_agreement.py            # needs nltk
    python benchmarks/tokenizer_agreement.py --examples 5
"""

import argparse
import collections

import numpy as np

SUBJECTS = ["a man", "a woman", "two dogs", "the little girl", "a group of people",
            "an old man", "three kids", "a brown dog", "the cyclist", "a chef"]
VERBS = ["is riding", "are playing with", "is holding", "walks past", "jumps over",
         "sits on", "is looking at", "throws", "runs toward", "stands near"]
OBJECTS = ["a red bike", "the ball", "a large umbrella", "a wooden bench",
           "the fence", "a frisbee", "a cup of coffee", "the ocean", "a kite",
           "a pile of snow"]
PLACES = ["in a park", "on the beach", "near a busy street", "in the kitchen",
          "at night", "under a bridge", "in front of a store", ""]

# Each kind adds one thing to a plain caption "subject verb object place".
KINDS = {
    "plain": lambda r, c: c,
    "final period": lambda r, c: c + ".",
    "comma": lambda r, c: c.replace(" is ", " , who is ", 1) if " is " in c else c + " , smiling",
    "quotes": lambda r, c: c + ' with a sign that says "' + r.choice(["stop", "open", "welcome home"]) + '"',
    "single quotes": lambda r, c: c + " holding a 'free hugs' sign",
    "ellipsis": lambda r, c: c + r.choice(["...", " ...", "... and smiles"]),
    "contractions": lambda r, c: c + r.choice([" , but it's raining", " and doesn't look happy",
                                                 " ; they're laughing", " while the dog's tail wags",
                                                 " and can't stop", " , i'd say"]),
    "possessive": lambda r, c: c.replace("a man", "a man's friend", 1) if "a man" in c else c + " in his father's car",
    "hyphens": lambda r, c: c + r.choice([" wearing a t-shirt", " in a black-and-white photo",
                                            " with a well-known logo", " in a twenty-first-century city"]),
    "numbers": lambda r, c: c + r.choice([" at 3:30 pm", " with 2.5 kg of fruit", " for $1,000",
                                            " in 1999", " with the number 23", " at 50%"]),
    "several sentences": lambda r, c: c + ". " + r.choice(["it is sunny.", "the sky is blue.",
                                                           "nobody else is there.", "she smiles."]),
    "non-ascii": lambda r, c: c + r.choice([" at a café", " with a piñata", " in zürich",
                                              " near the naïve mural", " eating crème brûlée"]),
    "brackets and slashes": lambda r, c: c + r.choice([" (blurry)", " [cropped]", " and/or a cat",
                                                         " - a candid shot"]),
    "stray spacing and case": lambda r, c: "  " + c.upper() + " ,  ",
}


def caption_corpus(n_per_kind=200, seed=0):
    """`(kind, caption)` pairs: `n_per_kind` captions of each of `KINDS`."""
    rng = np.random.default_rng(seed)
    pairs = []
    for kind, add in KINDS.items():
        for _ in range(n_per_kind):
            base = " ".join(
                part
                for part in (
                    rng.choice(SUBJECTS),
                    rng.choice(VERBS),
                    rng.choice(OBJECTS),
                    rng.choice(PLACES),
                )
                if part
            )
            pairs.append((kind, add(rng, base)))
    return pairs


def agreement(pairs, left, right):
    """Per kind: (captions, identical splits, examples of differences)."""
    table = collections.OrderedDict()
    for kind, caption in pairs:
        count, same, examples = table.get(kind, (0, 0, []))
        a, b = left(caption), right(caption)
        if a != b and len(examples) < 10:
            examples.append((caption, a, b))
        table[kind] = (count + 1, same + (a == b), examples)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--examples", type=int, default=1, help="differences shown per kind")
    args = parser.parse_args(argv)

    from scan_keras.data import get_tokenizer

    pairs = caption_corpus(args.per_kind)
    table = agreement(pairs, get_tokenizer("regex"), get_tokenizer("nltk"))
    print(f"{len(pairs)} captions; regex tokenizer against nltk's word tokenizer\n")
    print("| kind | captions | split identically |")
    print("| --- | ---: | ---: |")
    total = same_total = 0
    for kind, (count, same, _) in table.items():
        total, same_total = total + count, same_total + same
        print(f"| {kind} | {count} | {100 * same / count:.1f}% |")
    print(f"| all | {total} | {100 * same_total / total:.1f}% |")
    for kind, (_, _, examples) in table.items():
        for caption, a, b in examples[: args.examples]:
            print(f"\n{kind}: {caption!r}\n  regex: {a}\n  nltk:  {b}")


if __name__ == "__main__":
    main()
