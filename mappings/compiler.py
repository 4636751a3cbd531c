"""Compiling a mapping set into a Python callable, and running it on records.

A mapping is plain data (rules, value maps, the canonical schema). `compile_mapping` turns it once into
closures: path getters and setters, transform steps with their parameters bound, and a compiled JSON
Schema validator. Running it executes no database query and evaluates no user text. Cross-references
needed by `lookup_xref` steps are resolved for a whole batch at once through a resolver callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator

from mappings.paths import MISSING, PathError, compile_getter, compile_setter, has_wildcard, parse_path
from mappings.schema_check import fast_check_compile
from mappings.transforms import TRANSFORMS, CompileEnv, TransformError, ValueMapData, steps_validate

XrefKey = tuple[str, str, str]  # (system slug, entity, external id)
XrefResolver = Callable[[set[XrefKey]], Mapping[XrefKey, str]]
Applier = Callable[[Any, dict[str, Any], list["FieldError"]], None]

CONDITION_OPS = ("equals", "not_equals", "exists", "missing", "in", "not_in")


@dataclass(frozen=True)
class RuleSpec:
    """One field rule as plain data: target ← sources through steps, with required/default/condition."""

    target: str
    sources: Sequence[str]
    steps: Sequence[Mapping[str, Any]] = ()
    required: bool = False
    default: Any = MISSING
    condition: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MappingSpec:
    """Everything a mapping needs to compile: its rules, the value maps they use and the output schema."""

    label: str
    rules: Sequence[RuleSpec]
    value_maps: Mapping[str, ValueMapData] = field(default_factory=dict)
    output_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FieldError:
    """A mapping or validation failure, named by target field, source path and source value."""

    target: str
    source: str
    value: Any
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source, "value": _jsonable(self.value), "message": self.message}

    def __str__(self) -> str:
        source = f" (from {self.source} = {self.value!r})" if self.source else ""
        return f"{self.target}{source}: {self.message}"


@dataclass
class MappingResult:
    output: dict[str, Any]
    errors: list[FieldError]

    @property
    def ok(self) -> bool:
        return not self.errors


class MappingDefinitionError(ValueError):
    """The mapping itself is broken (bad path, transform or parameter); raised at compile or save time."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def rule_validate(rule: RuleSpec, *, value_map_names: set[str] | None = None) -> list[str]:
    """Every problem with one rule, as messages naming the field; [] when the rule would compile."""
    problems: list[str] = []
    prefix = f"Rule for {rule.target or '(no target)'}"
    for label, paths in (("target", [rule.target]), ("source", list(rule.sources))):
        for path in paths:
            try:
                parse_path(path)
            except PathError as exc:
                problems.append(f"{prefix}: {label} path: {exc}")
    if not rule.sources:
        problems.append(f"{prefix}: give at least one source path.")
    problems.extend(
        f"{prefix}: {message}"
        for message in steps_validate(list(rule.steps), source_count=len(rule.sources), value_map_names=value_map_names)
    )
    if rule.condition is not None:
        condition = rule.condition
        if not isinstance(condition, Mapping) or condition.get("op") not in CONDITION_OPS or "path" not in condition:
            problems.append(
                f'{prefix}: a condition is {{"path": ..., "op": one of {", ".join(CONDITION_OPS)}, "value": ...}}.'
            )
        else:
            try:
                parse_path(condition["path"])
            except PathError as exc:
                problems.append(f"{prefix}: condition path: {exc}")
    return problems


def _jsonable(value: Any) -> Any:
    # Canonical payloads are JSON: decimals become numbers, dates ISO text.
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is MISSING:
        return None
    return value


def _compile_condition(condition: Mapping[str, Any] | None) -> Callable[[Any], bool] | None:
    if not condition:
        return None
    getter = compile_getter(condition["path"])
    op, expected = condition["op"], condition.get("value")
    if op == "equals":
        return lambda record: getter(record) == expected
    if op == "not_equals":
        return lambda record: getter(record) != expected
    if op == "exists":
        return lambda record: getter(record) not in (MISSING, None)
    if op == "missing":
        return lambda record: getter(record) in (MISSING, None)
    members = set(expected) if isinstance(expected, list) else {expected}
    if op == "in":
        return lambda record: getter(record) in members
    return lambda record: getter(record) not in members


class _CompiledRule:
    __slots__ = (
        "condition",
        "default",
        "elementwise",
        "finalizer",
        "getters",
        "multi",
        "required",
        "setter",
        "source_label",
        "steps",
        "target",
        "xref_prefix",
    )

    def __init__(self, rule: RuleSpec, env: CompileEnv) -> None:
        self.target = rule.target
        self.source_label = ", ".join(rule.sources)
        self.getters = [compile_getter(path) for path in rule.sources]
        self.multi = len(rule.sources) > 1 or bool(rule.steps and TRANSFORMS[rule.steps[0]["transform"]].multi_source)
        self.elementwise = not self.multi and has_wildcard(parse_path(rule.sources[0]))
        self.setter = compile_setter(rule.target)
        self.required = rule.required
        self.default = rule.default
        self.condition = _compile_condition(rule.condition)
        self.steps: list[tuple[int, str, Callable[[Any], Any]]] = []
        self.xref_prefix: tuple[int, tuple[str, str]] | None = None
        for index, step in enumerate(rule.steps, start=1):
            name, params = step["transform"], dict(step.get("params") or {})
            try:
                fn = TRANSFORMS[name].factory(params, env)
            except TransformError as exc:
                raise MappingDefinitionError([f"Rule for {rule.target}: step {index} ({name}): {exc}"]) from exc
            self.steps.append((index, name, fn))
            if name == "lookup_xref" and self.xref_prefix is None:
                self.xref_prefix = (index - 1, (params["system"], params["entity"]))
        # Only steps that make decimals or dates need converting to JSON; most values already are JSON.
        kinds = {TRANSFORMS[step["transform"]].output_kind for step in rule.steps}
        self.finalizer: Callable[[Any], Any] | None
        if kinds <= {"json"}:
            self.finalizer = None
        elif kinds <= {"json", "decimal"}:
            self.finalizer = _decimal_to_json
        elif kinds <= {"json", "date"}:
            self.finalizer = _date_to_json
        else:
            self.finalizer = _finalize

    def source_value(self, record: Any) -> Any:
        if self.multi:
            return [getter(record) for getter in self.getters]
        return self.getters[0](record)

    def run_steps(self, value: Any, upto: int | None = None) -> Any:
        steps = self.steps if upto is None else self.steps[:upto]
        if self.elementwise and isinstance(value, list):
            return [self._chain(item, steps) for item in value]
        return self._chain(value, steps)

    @staticmethod
    def _chain(value: Any, steps: list[tuple[int, str, Callable[[Any], Any]]]) -> Any:
        for index, name, fn in steps:
            try:
                value = fn(value)
            except TransformError as exc:
                raise TransformError(f"step {index} ({name}): {exc}") from None
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise TransformError(f"step {index} ({name}) cannot handle this value: {exc}") from None
        return value

    def explain_failure(self, source: Any) -> FieldError:
        """Re-run the steps one by one to say which step failed; only called after a failure."""
        try:
            self.run_steps(source)
        except TransformError as exc:
            return FieldError(self.target, self.source_label, source, str(exc))
        return FieldError(self.target, self.source_label, source, "could not be mapped")

    def missing_value(self, source: Any, output: dict[str, Any], errors: list[FieldError]) -> None:
        if self.default is not MISSING:
            self.setter(output, _finalize(self.default))
        elif self.required:
            errors.append(FieldError(self.target, self.source_label, source, "is required but the source has no value"))

    def apply(self, record: Any, output: dict[str, Any], errors: list[FieldError]) -> None:
        """The general path: conditions, several sources, wildcards."""
        if self.condition is not None and not self.condition(record):
            return
        source = self.source_value(record)
        try:
            value = self.run_steps(source) if self.steps else source
        except TransformError as exc:
            errors.append(FieldError(self.target, self.source_label, source, str(exc)))
            return
        if value is MISSING or value is None:
            self.missing_value(source, output, errors)
            return
        try:
            self.setter(output, _finalize(value))
        except PathError as exc:
            errors.append(FieldError(self.target, self.source_label, source, str(exc)))

    def fast_applier(self, *, source_key: str | None, target_key: str | None) -> Applier:
        """A closure specialised for the common shape: one plain source path, no condition.

        Everything it needs is bound as a closure constant; the steps run in one try block, and the
        slow step-by-step explanation of a failure runs only after a step raised.
        """
        getters = tuple(self.getters)
        get = getters[0]
        if self.multi:
            # Several sources (concat, coalesce, currency_convert): the first step takes the list of values.
            source_key = None

            def get(record: Any) -> Any:
                return [getter(record) for getter in getters]

        fns = tuple(fn for _, _, fn in self.steps)
        chain: Callable[[Any], Any] | None
        if not fns:
            chain = None
        elif len(fns) == 1:
            chain = fns[0]
        else:

            def chain(value: Any) -> Any:
                for fn in fns:
                    value = fn(value)
                return value

        finalize = self.finalizer
        setter = self.setter
        missing = self.missing_value
        explain = self.explain_failure

        def apply(record: Any, output: dict[str, Any], errors: list[FieldError]) -> None:
            source = record.get(source_key, MISSING) if source_key is not None else get(record)
            if chain is None:
                value = source
            else:
                try:
                    value = chain(source)
                except Exception:  # noqa: BLE001 - re-explained step by step below
                    errors.append(explain(source))
                    return
            if value is MISSING or value is None:
                missing(source, output, errors)
                return
            if finalize is not None:
                value = finalize(value)
            if target_key is not None:
                output[target_key] = value
            else:
                setter(output, value)

        return apply


def _rules_runner(
    copies: Sequence[tuple[str, str | None, str, str | None]], appliers: Sequence[Applier]
) -> Callable[[Any, dict[str, Any], list[FieldError]], None]:
    """One generated function running every rule of a mapping: the plain copies inline, then the appliers.

    Generating the copies as straight-line code (no loop over rule tuples, no per-rule unpacking) makes
    a plain copy cost two dict operations. The generated text holds only identifiers chosen here and
    `repr()` literals of the already-validated path keys, so no user text is ever evaluated as code.
    """
    lines = ["def run_rules(record, output, errors):", "    get = record.get"]
    nested_targets: dict[str, str] = {}
    nested_sources: dict[str, str] = {}
    for source, inner, target, leaf in copies:
        if inner is None:
            lines.append(f"    value = get({source!r}, MISSING)")
        else:
            if source not in nested_sources:
                name = nested_sources[source] = f"source_{len(nested_sources)}"
                lines.append(f"    {name} = get({source!r}, MISSING)")
                lines.append(f"    {name} = {name}.get if {name}.__class__ is dict else None")
            name = nested_sources[source]
            lines.append(f"    value = {name}({inner!r}, MISSING) if {name} is not None else MISSING")
        lines.append("    if value is not MISSING:")
        if leaf is None:
            # Records come from JSON, so the value is JSON already.
            lines.append(f"        output[{target!r}] = value")
        else:
            parent = nested_targets.setdefault(target, f"parent_{len(nested_targets)}")
            lines.append(f"        {parent} = output.get({target!r})")
            lines.append(f"        if {parent}.__class__ is not dict:")
            lines.append(f"            {parent} = output[{target!r}] = {{}}")
            lines.append(f"        {parent}[{leaf!r}] = value")
    names = {f"apply_{index}": apply for index, apply in enumerate(appliers)}
    lines.extend(f"    {name}(record, output, errors)" for name in names)
    if len(lines) == 2:
        lines.append("    return None")
    namespace: dict[str, Any] = {"MISSING": MISSING, **names}
    exec(compile("\n".join(lines), "<compiled mapping>", "exec"), namespace)  # noqa: S102 - see docstring
    return namespace["run_rules"]  # type: ignore[no-any-return]


def _decimal_to_json(value: Any) -> Any:
    return float(value) if value.__class__ is Decimal else _finalize(value)


def _date_to_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else _finalize(value)


def _finalize(value: Any) -> Any:
    cls = value.__class__
    if cls is str or cls is int or cls is float or cls is bool:
        return value
    return _jsonable(value)


class CompiledMapping:
    """A mapping set compiled to closures; `map_one` and `map_batch` run it."""

    def __init__(self, spec: MappingSpec) -> None:
        problems = [
            problem for rule in spec.rules for problem in rule_validate(rule, value_map_names=set(spec.value_maps))
        ]
        if problems:
            raise MappingDefinitionError(problems)
        self.label = spec.label
        self.env = CompileEnv(value_maps=dict(spec.value_maps))
        self.rules = [_CompiledRule(rule, self.env) for rule in spec.rules]
        inlined = schema_refs_inlined(spec.output_schema) if spec.output_schema else None
        # Formats (date, date-time, email, ...) are checked like every other keyword: "2026-13-45" is no date.
        # The preview, the publish gate and the workers all run this same compiled mapping.
        format_checker = Draft202012Validator.FORMAT_CHECKER
        self.validator = Draft202012Validator(inlined, format_checker=format_checker) if inlined is not None else None
        # Most records are valid: a compiled yes/no check first, the full validator for its messages after.
        self.schema_fast_check = (
            fast_check_compile(inlined, format_checker=format_checker) if inlined is not None else None
        )
        self._rule_by_target = {rule.target: rule for rule in self.rules}
        # Plain copies (one or two key levels in, one or two key levels out, nothing else: the bulk of
        # most mappings) run inline in a tight loop of dict lookups; other rules with plain sources get a
        # specialised closure; conditions and wildcards take the general path.
        self._copies: list[tuple[str, str | None, str, str | None]] = []
        self._appliers: list[Applier] = []
        for compiled, spec_rule in zip(self.rules, spec.rules, strict=True):
            source_tokens = parse_path(spec_rule.sources[0])
            plain_sources = not any(has_wildcard(parse_path(source)) for source in spec_rule.sources)
            one_plain_source = len(spec_rule.sources) == 1 and plain_sources and not compiled.multi
            target_tokens = parse_path(spec_rule.target)
            if (
                one_plain_source
                and not spec_rule.steps
                and len(source_tokens) <= 2
                and all(isinstance(token, str) for token in source_tokens)
                and spec_rule.condition is None
                and not spec_rule.required
                and spec_rule.default is MISSING
                and len(target_tokens) <= 2
                and all(isinstance(token, str) for token in target_tokens)
            ):
                self._copies.append(
                    (
                        str(source_tokens[0]),
                        str(source_tokens[1]) if len(source_tokens) == 2 else None,
                        str(target_tokens[0]),
                        str(target_tokens[1]) if len(target_tokens) == 2 else None,
                    )
                )
            elif plain_sources and spec_rule.condition is None and not has_wildcard(target_tokens):
                self._appliers.append(
                    compiled.fast_applier(
                        source_key=str(source_tokens[0]) if one_plain_source and len(source_tokens) == 1 else None,
                        target_key=spec_rule.target if len(target_tokens) == 1 else None,
                    )
                )
            else:
                self._appliers.append(compiled.apply)
        self._run_rules = _rules_runner(self._copies, self._appliers)
        self.uses_xrefs = any(rule.xref_prefix for rule in self.rules)

    def map_one(self, record: Mapping[str, Any]) -> MappingResult:
        """Map one record; errors name the target field, the source path and the source value."""
        output: dict[str, Any] = {}
        errors: list[FieldError] = []
        self._run_rules(record, output, errors)
        if self.validator is not None and not errors:
            if self.schema_fast_check is not None and self.schema_fast_check(output):
                return MappingResult(output=output, errors=errors)
            errors.extend(self._schema_errors(record, output))
        return MappingResult(output=output, errors=errors)

    def map_batch(
        self, records: Iterable[Mapping[str, Any]], *, resolve_xrefs: XrefResolver | None = None
    ) -> list[MappingResult]:
        """Map many records; all cross-references they need are resolved with one resolver call first."""
        batch = list(records)
        if self.uses_xrefs and resolve_xrefs is not None:
            self.prefetch_xrefs(batch, resolve_xrefs)
        return [self.map_one(record) for record in batch]

    def prefetch_xrefs(self, records: Sequence[Mapping[str, Any]], resolve_xrefs: XrefResolver) -> None:
        keys: set[XrefKey] = set()
        for rule in self.rules:
            if rule.xref_prefix is None:
                continue
            upto, (system, entity) = rule.xref_prefix
            for record in records:
                try:
                    value = rule.run_steps(rule.source_value(record), upto=upto)
                except TransformError:
                    continue  # the real run reports it, with the field and value
                for item in value if isinstance(value, list) else [value]:
                    if item is not MISSING and item is not None:
                        keys.add((system, entity, str(item)))
        missing = {key for key in keys if key not in self.env.xref_cache}
        if missing:
            self.env.xref_cache.update(resolve_xrefs(missing))

    def _schema_errors(self, record: Mapping[str, Any], output: dict[str, Any]) -> list[FieldError]:
        assert self.validator is not None
        found: list[FieldError] = []
        for error in self.validator.iter_errors(output):
            path = _dotted(error.absolute_path)
            if error.validator == "required" and isinstance(error.instance, dict):
                # One error per missing property: name the property this message is about, not the first
                # missing one, so the message lands on the rule of the field it speaks of.
                missing = next(
                    (
                        name
                        for name in error.validator_value
                        if name not in error.instance and error.message.startswith(f"{name!r} ")
                    ),
                    "",
                )
                path = f"{path}.{missing}" if path and missing else (missing or path)
            rule = self._rule_for(path)
            source = rule.source_label if rule else ""
            value = rule.source_value(record) if rule else MISSING
            found.append(FieldError(path or "(record)", source, None if value is MISSING else value, error.message))
        return found

    def _rule_for(self, path: str) -> _CompiledRule | None:
        candidate = path
        while candidate:
            if candidate in self._rule_by_target:
                return self._rule_by_target[candidate]
            wildcarded = _wildcard_indexes(candidate)
            if wildcarded in self._rule_by_target:
                return self._rule_by_target[wildcarded]
            candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
        return None


# Keywords that only describe: a `$ref` beside them alone is the referenced schema as is.
_ANNOTATIONS = frozenset(
    {"description", "title", "examples", "default", "$comment", "deprecated", "readOnly", "x-sensitive"}
)


def schema_refs_inlined(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with its local `#/$defs/<name>` references replaced by what they point to, so validating
    a record resolves no reference (half the time of a schema check). A schema with any other kind of
    reference, or a recursive one, is returned as it is."""
    definitions = schema.get("$defs") or {}

    def inline(node: Any, trail: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, trail) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/$defs/")
            if name == ref or "/" in name or name not in definitions or name in trail:
                raise _NotInlinable
            target = inline(definitions[name], (*trail, name))
            rest = {key: inline(value, trail) for key, value in node.items() if key != "$ref"}
            if not set(rest) - _ANNOTATIONS:
                return target
            return {"allOf": [target], **rest}
        return {key: inline(value, trail) for key, value in node.items() if key != "$defs"}

    try:
        return dict(inline(schema, ()))
    except _NotInlinable:
        return dict(schema)


class _NotInlinable(Exception):
    """A reference that is not a local, non-recursive `#/$defs/<name>`: the schema is kept as it is."""


def _dotted(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _wildcard_indexes(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


def compile_mapping(spec: MappingSpec) -> CompiledMapping:
    """Compile a mapping; raises MappingDefinitionError listing every problem with its rules."""
    return CompiledMapping(spec)
