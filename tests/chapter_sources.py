"""Which glue keys a chapter's source records, read from its text (the chapter need not have run).

Chapters glue through :class:`dpo_toxicity.book.glued.Glued`: literal names (``glued("late_layer_share", ...)``),
f-strings with a literal part (``glued(f"{key}_by_change", ...)``), a variable over a list of quoted names
(``glued(key, ...)``) and, in chapter 5, ``glued(f"{key}{suffix}", ...)`` over the quoted names of a table, once per model (the second
model's with ``_second``). A variable key may carry ``_low``/``_high``, ``_second`` and a scorer component
(``__ridge``) after a quoted stem.
"""

import re

from dpo_toxicity.paths import project_root

GLUE_NAME = re.compile(r"""\bglued\(\s*(f?)(["'])(.*?)\2""")
GLUE_VARIABLE = re.compile(r"\bglued\(\s*[A-Za-z_]\w*\s*,")
SECOND = "_second"


def glued_in_source(key: str, document: str) -> bool:
    """Whether ``book/<document>.py`` glues ``key``, as far as its text shows."""
    source = (project_root() / f"{document}.py").read_text(encoding="utf-8")
    # A stem is the key without the scorer-component, model and interval suffixes chapters add in loops.
    stem = re.sub(r"(_low|_high)$", "", key.split("__")[0].removesuffix(SECOND))
    if GLUE_VARIABLE.search(source) and re.search(rf"""["']({re.escape(key)}|{re.escape(stem)})["']""", source):
        return True
    for f_string, _, name in GLUE_NAME.findall(source):
        if not f_string and name == key:
            return True
        if f_string:
            parts = re.split(r"\{[^}]*\}", name)
            if any(parts):  # a literal part: the placeholders stand for names
                if re.fullmatch(r"\w*".join(map(re.escape, parts)), key):
                    return True
            elif len(parts) > 2:  # f"{key}{suffix}": a quoted name of the source, plain or with the suffix
                if re.search(rf"""["']{re.escape(key.removesuffix(SECOND))}["']""", source):
                    return True
    return False
