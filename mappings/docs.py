"""The transform reference in docs/transforms.md, generated from the transform registry so it never drifts."""

from __future__ import annotations

import json

from mappings.transforms import TRANSFORMS

CATEGORY_TITLES = {
    "text": "Text",
    "values": "Values",
    "dates": "Dates and times",
    "numbers": "Numbers",
    "references": "Cross-references",
}


def _param_lines(schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return ["No parameters."]
    required = set(schema.get("required", []))
    lines = ["| parameter | type | required |", "|---|---|---|"]
    for name, spec in properties.items():
        enum = ", ".join(map(str, spec.get("enum", [])))
        kind = spec.get("type") or (f"one of {enum}" if enum else "any JSON value")
        if isinstance(kind, list):
            kind = " or ".join(kind)
        lines.append(f"| `{name}` | {kind} | {'yes' if name in required else 'no'} |")
    return lines


def transforms_markdown() -> str:
    """The whole reference page as Markdown."""
    out = [
        "# Transform reference",
        "",
        "Field rules chain these transforms in order. Each step is written as",
        '`{"transform": "<name>", "params": {...}}`; parameters are checked when the rule is saved.',
        "A transform that combines several source paths (concat, coalesce, currency_convert) must be the first step.",
        "Text and number transforms leave a missing value missing, so `required` and the rule's default decide.",
        "",
        "_This page is generated from the transform registry: `python manage.py transforms_doc`._",
        "",
    ]
    for category, title in CATEGORY_TITLES.items():
        specs = sorted((s for s in TRANSFORMS.values() if s.category == category), key=lambda s: s.name)
        if not specs:
            continue
        out += [f"## {title}", ""]
        for spec in specs:
            example_params = dict.fromkeys(spec.params_schema.get("required", []), "…")
            out += [
                f"### `{spec.name}`",
                "",
                " ".join(spec.doc.split()),
                "",
                *_param_lines(spec.params_schema),
                "",
                f"Example step: `{json.dumps({'transform': spec.name, 'params': example_params}, ensure_ascii=False)}`",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
