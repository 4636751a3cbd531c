"""The client master's duplicate-check parameters, stored like every policy parameter: a named rule entry.

Analysts set the check's threshold on the client-master sync policy as
`{"rule": "client_duplicate_check", "params": {"name_threshold": 90, "match_domain": true, "match_tax_id": true}}`;
the policy editor validates the params against the schema below. The check itself needs the hub's client
directory, so the client-master flow runs it (workflows.client_master); the engine's per-record evaluation of
this entry passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from governance.rules import RuleContext, RuleResult, register_rule
from workflows.client_master import DUPLICATE_RULE, DUPLICATE_RULE_PARAMS


@register_rule(
    DUPLICATE_RULE,
    label="Client duplicate check",
    description="Client master: a new account is held for an analyst when a known client has a similar name "
    "(at or above name_threshold), the same web domain or the same tax id. Run by the client-master flow.",
    params_schema=DUPLICATE_RULE_PARAMS,
)
def client_duplicate_check(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    return RuleResult(
        passed=True,
        rule=DUPLICATE_RULE,
        message="Checked by the client-master flow against the client directory.",
    )
