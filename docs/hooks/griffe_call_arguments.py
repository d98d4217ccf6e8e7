"""Griffe extension: render Keras' `Call arguments:` section as parameters.

Keras docstrings list the arguments of `call()` under `Call arguments:`,
a title the Google parser does not know, so it would show them as one run-on
paragraph. This reads that block with the parser's own `Args:` reader and
shows it like the arguments, as a list titled "Call arguments:". The names
are not checked against the signature of `__init__`, which they do not
belong to.

Loaded by mkdocstrings (`extensions:` in mkdocs.yml), not by the package.
"""

import textwrap

import griffe

TITLE = "Call arguments"


class CallArguments(griffe.Extension):
    def on_package(self, *, pkg, **kwargs):
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None or f"{TITLE}:" not in docstring.value:
                continue
            sections = docstring.parse()
            for index, section in enumerate(sections):
                if section.kind is griffe.DocstringSectionKind.admonition and (
                    section.title == TITLE
                ):
                    sections[index] = _as_parameters(docstring, section)
            # `parsed` is a cached property: this is what gets rendered.
            docstring.__dict__["parsed"] = sections


def _objects(obj):
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield member
        if member.is_module or member.is_class:
            yield from _objects(member)


def _as_parameters(docstring, section):
    # A summary line first: docstrings are dedented by the common indent of
    # the lines after the first, which would flatten the block below.
    text = "Call.\n\nArgs:\n" + textwrap.indent(section.value.description, "    ")
    options = {**docstring.parser_options, "warnings": False}
    block = griffe.Docstring(text, parser=docstring.parser, parser_options=options)
    parsed = block.parse()
    kinds = [s.kind for s in parsed]
    if kinds != [griffe.DocstringSectionKind.text, griffe.DocstringSectionKind.parameters]:
        return section
    parameters = parsed[1]
    parameters.title = f"{TITLE}:"
    return parameters
