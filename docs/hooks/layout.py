"""MkDocs hook: marks what the site's style sheet needs and CSS cannot find.

A table cell that holds one piece of code and nothing else (a preset such
as `f30k_t2i_lse`, a module's file, an option of the command line) gets the
class `code-cell`, which `docs/stylesheets/extra.css` keeps on one line.
Code among words still breaks where it must, so that wide tables fit the
column; CSS alone cannot tell the two apart, as selectors do not see text.
"""

import re

_CODE_CELL = re.compile(r"<td((?:\s+align=\"\w+\")?)>(\s*<code>[^<]*</code>\s*)</td>")


def on_page_content(html, page, config, files):
    return _CODE_CELL.sub(r'<td\1 class="code-cell">\2</td>', html)
