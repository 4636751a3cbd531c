"""The leaders' guide (docs/leader.md) as a page of the hub: a small Markdown reader for the subset the guide is
written in (headings, paragraphs, bullet lists, pipe tables, fenced code, **bold**, *italic*, `code` and
[links](url)). The runtime has no Markdown library, and the guide is ours, so this subset is enough; anything
else is shown as text, escaped."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

LEADER_GUIDE = "leader.md"
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\[([^\]]+)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _inline(text: str) -> str:
    """Escape `text` and render its inline marks; a link is kept only to a page of the hub or to http(s)."""
    parts: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        parts.append(escape(text[position : match.start()]))
        code, bold, italic, label, url = match.groups()
        if code is not None:
            parts.append(f"<code>{escape(code)}</code>")
        elif bold is not None:
            parts.append(f"<strong>{_inline(bold)}</strong>")
        elif italic is not None:
            parts.append(f"<em>{_inline(italic)}</em>")
        elif url.startswith(("/", "#", "https://", "http://")):
            parts.append(f'<a href="{escape(url)}">{_inline(label)}</a>')
        else:
            parts.append(_inline(label))
        position = match.end()
    parts.append(escape(text[position:]))
    return "".join(parts)


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> SafeString:
    """HTML of the guide's Markdown subset; every piece of text is escaped."""
    lines = text.splitlines()
    html: list[str] = []
    paragraph: list[str] = []
    index = 0

    def flush() -> None:
        if paragraph:
            html.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    while index < len(lines):
        line = lines[index].rstrip()
        heading = _HEADING.match(line)
        if not line.strip():
            flush()
        elif line.startswith("```"):
            flush()
            block = []
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                block.append(lines[index])
                index += 1
            html.append(f"<pre><code>{escape(chr(10).join(block))}</code></pre>")
        elif heading:
            flush()
            level = len(heading.group(1))
            title = heading.group(2).strip()
            html.append(f'<h{level} id="{_slug(title)}">{_inline(title)}</h{level}>')
        elif line.startswith("|") and index + 1 < len(lines) and _TABLE_RULE.match(lines[index + 1].strip()):
            flush()
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in _cells(line))
            body = []
            index += 2
            while index < len(lines) and lines[index].strip().startswith("|"):
                body.append("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in _cells(lines[index])) + "</tr>")
                index += 1
            html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
            continue
        elif re.match(r"^\s*[-*]\s+", line):
            flush()
            items = []
            while index < len(lines) and re.match(r"^\s*[-*]\s+", lines[index]):
                item = [re.sub(r"^\s*[-*]\s+", "", lines[index]).strip()]
                index += 1
                # A list item continues on the indented lines below it.
                while (
                    index < len(lines) and lines[index].startswith("  ") and not re.match(r"^\s*[-*]\s+", lines[index])
                ):
                    item.append(lines[index].strip())
                    index += 1
                items.append(f"<li>{_inline(' '.join(item))}</li>")
            html.append(f"<ul>{''.join(items)}</ul>")
            continue
        else:
            paragraph.append(line.strip())
        index += 1
    flush()
    return mark_safe("\n".join(html))  # noqa: S308 - every piece of text above went through escape()


def leader_guide() -> tuple[str, SafeString]:
    """(title, HTML) of docs/leader.md: its first heading, and the rest rendered."""
    text = (Path(settings.BASE_DIR) / "docs" / LEADER_GUIDE).read_text(encoding="utf-8")
    title = "KPI dashboard guide"
    first, _, rest = text.partition("\n")
    if first.startswith("# "):
        title, text = first[2:].strip(), rest
    return title, markdown_to_html(text)
