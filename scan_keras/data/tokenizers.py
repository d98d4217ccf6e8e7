"""The tokenizers that split captions into words, by name.

A vocabulary names the tokenizer that splits its captions, saved as
`"tokenizer"` in its JSON and with every model, so that a model always
reads captions as it was trained to:

| name | what | needs |
| --- | --- | --- |
| `"nltk_punkt"` | nltk's `word_tokenize`, exactly what the reference code ran | nltk and its `punkt_tab` data (`python -m nltk.downloader punkt_tab`) |
| `"nltk"` | nltk's word tokenizer without the sentence splitter (`word_tokenize(..., preserve_line=True)`): the same tokens, except that a period ending a sentence other than the last stays on its word | nltk (`pip install "scan-keras[nltk]"`), no data files |
| `"regex"` | the package's own regular expression (`tokenize`), close to nltk | nothing |

A vocabulary built without a choice takes `"nltk"` where nltk is
installed, else `"regex"`. A JSON file without the key is read as
`"regex"`, which every vocabulary scan-keras wrote before the choice
existed used; the authors' released files name no tokenizer either:
`scan_keras.convert` reads them as `"nltk"`.
"""

import re

from scan_keras.checks import check_choice

TOKENIZERS = ("nltk_punkt", "nltk", "regex")
# What a vocabulary file without a "tokenizer" key was written with.
DEFAULT_TOKENIZER = "regex"
_NLTK_HINT = (
    'install nltk (`pip install nltk`, or `pip install "scan-keras[nltk]"`)'
)

# A stand-in for nltk's word tokeniser (which the reference code used),
# without its downloads. Alternatives are tried in order at each position.
_TOKEN = re.compile(
    r"""
      \w+(?=n't\b)                 # "do" of "don't": nltk splits before n't
    | n't\b                        # ... and keeps the negation as a token
    | '(?:s|re|ve|ll|d|m)\b        # clitics of "it's", "we're", "i'd", ...
    | \d+(?:[.,]\d+)+              # 3.5 and 1,000 stay whole
    | \w+(?:-\w+)*                 # words; "t-shirt" stays whole
         (?:'(?!(?:s|re|ve|ll|d|m)\b)\w+)*   # and "o'clock"
    | \S                           # any other character: one token each
    """,
    re.VERBOSE,
)


def tokenize(caption: str) -> list:
    """Splits a caption into lower-case words and punctuation.

    Close to nltk's `word_tokenize`, which the reference code used: words,
    numbers (`3.5`, `1,000`) and hyphenated words (`t-shirt`) stay whole;
    contractions split as nltk splits them (`don't` -> `do`, `n't`;
    `it's` -> `it`, `'s`); every other non-space character is a token of
    its own (so `...` is three tokens, where nltk keeps one, and quotes are
    kept as written, where nltk rewrites them).

    Args:
        caption: the caption, any case.

    Returns:
        The list of tokens, lower case; empty for a blank caption.

    Example:

    ```python
    from scan_keras.data import tokenize

    tokenize("A man's dog, 2.5 years old, doesn't bark!")
    # ['a', 'man', "'s", 'dog', ',', '2.5', 'years', 'old', ',',
    #  'does', "n't", 'bark', '!']
    ```
    """
    return _TOKEN.findall(_checked(caption).lower())


def default_tokenizer():
    """`"nltk"` where nltk is installed, else `"regex"`."""
    try:
        import nltk  # noqa: F401
    except ImportError:
        return "regex"
    return "nltk"


def check_tokenizer(name):
    """Raises ValueError unless `name` is one of `TOKENIZERS`."""
    check_choice("tokenizer", name, TOKENIZERS)


def get_tokenizer(name):
    """The function `caption -> tokens` of a tokenizer of `TOKENIZERS`.

    Every one lower-cases the caption first, as the reference code did.

    Raises:
        ValueError: `name` is unknown.
        ImportError: the tokenizer needs nltk (or nltk's `punkt_tab` data)
            and it is not installed; the message says how to install it.
    """
    check_tokenizer(name)
    if name == "regex":
        return tokenize
    try:
        import nltk
    except ImportError as err:
        raise ImportError(
            f"This vocabulary's captions are split by the tokenizer {name!r}, "
            f"which needs nltk: {_NLTK_HINT}. A model reads captions only as "
            "it was trained to."
        ) from err
    if name == "nltk":
        word_tokenizer = nltk.tokenize.NLTKWordTokenizer()
        return lambda caption: word_tokenizer.tokenize(_checked(caption).lower())
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError as err:
        raise ImportError(
            "This vocabulary's captions are split by the tokenizer "
            "'nltk_punkt' (nltk's word_tokenize, sentence splitting "
            "included), which needs nltk's punkt_tab data: run "
            "`python -m nltk.downloader punkt_tab` once."
        ) from err
    return lambda caption: nltk.word_tokenize(_checked(caption).lower())


def _checked(caption):
    if not isinstance(caption, str):
        raise ValueError(
            f"Expected `caption` to be a string. Received: caption={caption!r}"
        )
    return caption
