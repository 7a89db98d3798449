"""A griffe extension that lets the API reference read emzoo's docstrings as they are written.

emzoo's docstrings follow the Google style but keep a few reStructuredText habits, so that they
also read well in ``help()`` and Sphinx-minded editors: ``:func:`~emzoo.engine.upscale_volume```
roles, double-backtick literals, ``Layout::`` before a literal block, and ``Args:`` entries that
name several parameters at once (``tile, overlap: ...``). This extension rewrites each docstring
in memory, before mkdocstrings parses it (the source files are never touched):

- a role becomes a link to that object's entry in the API reference when it has one, and plain
  code otherwise (an optional cross-reference, so a role naming an object the reference does not
  show never breaks the strict build);
- ````x```` becomes ```x```, and a closing ``::`` becomes ``:``;
- ``a, b, c: text`` in an ``Args:`` section (possibly spread over lines ending in a comma) becomes
  one entry per name, each with the same text.

Example (mkdocs.yml)::

    plugins:
      - mkdocstrings:
          handlers:
            python:
              options:
                extensions:
                  - docs/hooks/griffe_rst.py
"""

import re

import griffe

# :func:`~emzoo.engine.upscale_volume`, :class:`Volume`, :py:meth:`x.y` ...
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const|ref|term):`(~?)([^`]+?)`")
_DOUBLE = re.compile(r"``([^`]+?)``")
_EXAMPLE = re.compile(r"^(\s*)Examples?:\s*$")
_DOCTEST_FLAG = re.compile(r"\s*# doctest:[^\n]*$")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")


def _role(match):
    short, target = match.group(1), match.group(2).strip()
    explicit = re.fullmatch(r"(.+?)\s*<([^<>]+)>", target)  # :meth:`title <target>`
    identifier = (explicit.group(2) if explicit else target).strip().lstrip("~.")
    if explicit:
        title = explicit.group(1)
    else:
        title = identifier.rsplit(".", 1)[-1] if short else identifier
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _split_names(lines):
    """One ``name: text`` entry per name in the ``Args:`` sections of ``lines``."""
    out = []
    i = 0
    section_indent = None
    while i < len(lines):
        line = lines[i]
        heading = _SECTION.match(line)
        if heading:
            section_indent = len(heading.group(1))
            out.append(line)
            i += 1
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if section_indent is not None and stripped and indent <= section_indent:
            section_indent = None  # the section ended
        if section_indent is None or not stripped or indent <= section_indent:
            out.append(line)
            i += 1
            continue
        # An entry's first line; join names listed over lines that end in a comma.
        entry = stripped
        j = i
        while entry.endswith(",") and ":" not in entry and j + 1 < len(lines):
            j += 1
            entry = f"{entry} {lines[j].strip()}"
        names, sep, text = entry.partition(":")
        if sep and "," in names and all(n.strip().isidentifier() or n.strip().lstrip("*").isidentifier()
                                        for n in names.split(",") if n.strip()):
            # The entry's continuation lines (deeper than the entry) belong to each name.
            k = j + 1
            more = []
            while k < len(lines) and (not lines[k].strip() or
                                      len(lines[k]) - len(lines[k].lstrip()) > indent):
                if not lines[k].strip() and (k + 1 >= len(lines) or
                                             len(lines[k + 1]) - len(lines[k + 1].lstrip()) <= indent):
                    break
                more.append(lines[k])
                k += 1
            for name in (n.strip() for n in names.split(",") if n.strip()):
                out.append(f"{' ' * indent}{name}:{text}")
                out.extend(more)
            i = k
            continue
        out.append(line)
        i += 1
    return out


def _inline(text):
    text = _ROLE.sub(_role, text)
    text = _DOUBLE.sub(r"`\1`", text)
    return re.sub(r"(\S)::[ \t]*$", r"\1:", text, flags=re.MULTILINE)


def _indent(line):
    return len(line) - len(line.lstrip())


def rewrite(text):
    """The docstring ``text`` with its reStructuredText habits turned into Markdown."""
    lines = _split_names(text.splitlines())
    out, prose = [], []  # prose: text lines waiting for the inline rewrite (literals span lines)

    def flush():
        if prose:
            out.append(_inline("\n".join(prose)))
            prose.clear()

    i = 0
    while i < len(lines):
        heading = _EXAMPLE.match(lines[i])
        if not heading:
            prose.append(lines[i])
            i += 1
            continue
        # The body of an ``Example:`` section, shown as one code block (doctest flags dropped).
        base = len(heading.group(1))
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1
        body = lines[i + 1:j]
        if not body:
            prose.append(lines[i])
            i += 1
            continue
        flush()
        inner = min(_indent(line) for line in body if line.strip())
        code = [_DOCTEST_FLAG.sub("", line[inner:]) for line in body]
        lang = "pycon" if any(line.lstrip().startswith(">>>") for line in code) else "python"
        pad = " " * inner
        out.append(lines[i])
        out.append(f"{pad}```{lang}")
        out.extend(f"{pad}{line}" if line.strip() else "" for line in code)
        out.append(f"{pad}```")
        i = j
    flush()
    return "\n".join(out)


class RstHabits(griffe.Extension):
    """Rewrites every docstring of the loaded objects before it is parsed (see the module)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and obj.docstring.value:
            obj.docstring.value = rewrite(obj.docstring.value)
