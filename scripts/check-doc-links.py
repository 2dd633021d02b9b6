#!/usr/bin/env python3
"""Checks every relative link of README.md, SECURITY.md and docs/*.md: the file it names exists,
and its `#anchor` (or a bare `#anchor` into the same page) is a heading of that page, as GitHub
makes anchors from headings. Links to other sites are not followed. Exits 1 naming each broken
link as file:line.

    python3 scripts/check-doc-links.py            # the repository's pages
    python3 scripts/check-doc-links.py FILE...    # only these
"""
import os
import re
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target), with an optional "title"; code spans are taken out first.
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(path):
    """(line number, text) of every line outside fenced code blocks."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                if fence is None:
                    fence = m.group(1)
                elif line.strip().startswith(fence):
                    fence = None
                continue
            if fence is None:
                yield number, line.rstrip("\n")


def slug(heading):
    """GitHub's anchor for a heading: its text as rendered, lower case, punctuation dropped
    (letters, digits, `-` and `_` stay), each space a hyphen."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "")
    text = text.lower()
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "-_ " or category[0] in "LN" or category == "Mn":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen = {}
        found = set()
        for _, line in prose_lines(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def links(path):
    for number, line in prose_lines(path):
        text = CODE_SPAN.sub("code", line)
        for m in LINK.finditer(text):
            yield number, m.group(2)


def check(path):
    problems = []
    for number, target in links(path):
        if not target or EXTERNAL.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        if file_part:
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if not os.path.exists(resolved):
                problems.append(f"{number}: {target}: no such file")
                continue
        else:
            resolved = path
        if anchor:
            if not resolved.endswith(".md") or os.path.isdir(resolved):
                problems.append(f"{number}: {target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved):
                problems.append(
                    f"{number}: {target}: no heading with anchor #{anchor} in "
                    f"{os.path.relpath(resolved, ROOT)}"
                )
    return problems


def pages():
    names = ["README.md", "SECURITY.md"]
    names += sorted(
        os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md")
    )
    return [os.path.join(ROOT, n) for n in names if os.path.exists(os.path.join(ROOT, n))]


def main(args):
    paths = [os.path.abspath(a) for a in args] or pages()
    broken = 0
    count = 0
    for path in paths:
        count += sum(1 for _ in links(path))
        for problem in check(path):
            print(f"{os.path.relpath(path, ROOT)}:{problem}")
            broken += 1
    print(f"doc links: {count} links in {len(paths)} files, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
