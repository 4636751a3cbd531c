"""Mapping benchmark: a 20-field record through the compiled mapping, hand-written Python and jmespath.

The record involves renames, two value maps, a date parse, a decimal with rounding, a concat and a
nested output. All three produce identical outputs (checked before timing). Targets: the compiled
mapping reaches at least 0.6x the hand-written speed and at least 5x jmespath's.
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from bench.common import django_setup, interleaved_best, record_result

RECORDS = 20_000
STAGES = {
    "Prospecting": "open",
    "Qualification": "open",
    "Negotiation": "open",
    "Closed Won": "won",
    "Closed Lost": "lost",
}
BILLING = {"T&M": "time_and_materials", "FF": "fixed_fee", "RET": "retainer", "MS": "milestone"}

RULES = [
    ("id", ["Id"], []),
    ("name", ["Name"], []),
    ("stage", ["StageName"], [{"transform": "map_value", "params": {"value_map": "stage"}}]),
    ("billing_type", ["Contract_Type__c"], [{"transform": "map_value", "params": {"value_map": "billing"}}]),
    ("amount", ["Amount"], [{"transform": "to_decimal", "params": {"places": 2, "rounding": "half_up"}}]),
    ("close_date", ["CloseDate__c"], [{"transform": "parse_date", "params": {"formats": ["%d/%m/%Y"]}}]),
    ("owner_name", ["Owner.FirstName", "Owner.LastName"], [{"transform": "concat", "params": {"separator": " "}}]),
    ("client.id", ["Account.Id"], []),
    ("client.name", ["Account.Name"], []),
    ("client.parent_id", ["Account.ParentId"], []),
    ("currency", ["CurrencyIsoCode"], []),
    ("probability", ["Probability"], []),
    ("legal_entity", ["Legal_Entity__c"], []),
    ("practice", ["Practice__c"], []),
    ("industry", ["Account.Industry"], []),
    ("region", ["Region__c"], []),
    ("description", ["Description"], []),
    ("lead_source", ["LeadSource"], []),
    ("external_ref", ["External_Ref__c"], []),
    ("reporting.cost_center", ["Cost_Center__c"], []),
]


def make_records(count: int) -> list[dict]:
    rng = random.Random(42)
    records = []
    for i in range(count):
        records.append(
            {
                "Id": f"006{i:015d}",
                "Name": f"Atlas rollout phase {i}",
                "StageName": rng.choice(list(STAGES)),
                "Contract_Type__c": rng.choice(list(BILLING)),
                "Amount": f"{rng.uniform(1000, 900000):.3f}",
                "CloseDate__c": f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/2026",
                "Owner": {
                    "FirstName": rng.choice(["Ada", "Grace", "Alan"]),
                    "LastName": rng.choice(["Lovelace", "Hopper", "Turing"]),
                },
                "Account": {
                    "Id": f"001{i % 500:015d}",
                    "Name": f"Client {i % 500}",
                    "ParentId": f"001{i % 50:015d}",
                    "Industry": "Retail",
                },
                "CurrencyIsoCode": rng.choice(["USD", "GBP", "EUR"]),
                "Probability": rng.randint(0, 100),
                "Legal_Entity__c": rng.choice(["US01", "UK01", "DE01"]),
                "Practice__c": "Data & AI",
                "Region__c": "EMEA",
                "Description": "Rollout of the data platform",
                "LeadSource": "Partner",
                "External_Ref__c": f"EXT-{i}",
                "Cost_Center__c": f"CC-{i % 20}",
            }
        )
    return records


CENT = Decimal("0.01")


def hand_written(r: dict) -> dict:
    account = r["Account"]
    owner = r["Owner"]
    return {
        "id": r["Id"],
        "name": r["Name"],
        "stage": STAGES[r["StageName"]],
        "billing_type": BILLING[r["Contract_Type__c"]],
        "amount": float(Decimal(r["Amount"]).quantize(CENT, rounding=ROUND_HALF_UP)),
        "close_date": datetime.strptime(r["CloseDate__c"], "%d/%m/%Y").date().isoformat(),
        "owner_name": f"{owner['FirstName']} {owner['LastName']}",
        "client": {"id": account["Id"], "name": account["Name"], "parent_id": account["ParentId"]},
        "currency": r["CurrencyIsoCode"],
        "probability": r["Probability"],
        "legal_entity": r["Legal_Entity__c"],
        "practice": r["Practice__c"],
        "industry": account["Industry"],
        "region": r["Region__c"],
        "description": r["Description"],
        "lead_source": r["LeadSource"],
        "external_ref": r["External_Ref__c"],
        "reporting": {"cost_center": r["Cost_Center__c"]},
    }


def jmespath_mapping():  # type: ignore[no-untyped-def]
    import jmespath
    from jmespath import functions

    class HubFunctions(functions.Functions):
        @functions.signature({"types": ["string"]})
        def _func_stage(self, value):  # type: ignore[no-untyped-def]
            return STAGES[value]

        @functions.signature({"types": ["string"]})
        def _func_billing(self, value):  # type: ignore[no-untyped-def]
            return BILLING[value]

        @functions.signature({"types": ["string"]})
        def _func_dec2(self, value):  # type: ignore[no-untyped-def]
            return float(Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP))

        @functions.signature({"types": ["string"]})
        def _func_dmy(self, value):  # type: ignore[no-untyped-def]
            return datetime.strptime(value, "%d/%m/%Y").date().isoformat()

    expression = jmespath.compile(
        "{id: Id, name: Name, stage: stage(StageName), billing_type: billing(Contract_Type__c),"
        " amount: dec2(Amount), close_date: dmy(CloseDate__c),"
        " owner_name: join(' ', [Owner.FirstName, Owner.LastName]),"
        " client: {id: Account.Id, name: Account.Name, parent_id: Account.ParentId}, currency: CurrencyIsoCode,"
        " probability: Probability, legal_entity: Legal_Entity__c, practice: Practice__c, industry: Account.Industry,"
        " region: Region__c, description: Description, lead_source: LeadSource, external_ref: External_Ref__c,"
        " reporting: {cost_center: Cost_Center__c}}"
    )
    options = jmespath.Options(custom_functions=HubFunctions())
    return lambda record: expression.search(record, options=options)


def compiled_mapping():  # type: ignore[no-untyped-def]
    from mappings.compiler import MappingSpec, RuleSpec, compile_mapping
    from mappings.transforms import ValueMapData

    spec = MappingSpec(
        label="bench opportunity",
        rules=[RuleSpec(target, sources, steps) for target, sources, steps in RULES],
        value_maps={"stage": ValueMapData("stage", STAGES), "billing": ValueMapData("billing", BILLING)},
    )
    return compile_mapping(spec)


def main() -> bool:
    django_setup()
    records = make_records(RECORDS)
    compiled = compiled_mapping()
    jmes = jmespath_mapping()

    # Same outputs from all three, for every record, before anything is timed.
    for record in records:
        result = compiled.map_one(record)
        assert not result.errors, result.errors
        expected = hand_written(record)
        assert result.output == expected, (result.output, expected)
        assert jmes(record) == expected

    def run_compiled() -> int:
        map_one = compiled.map_one
        for record in records:
            map_one(record)
        return len(records)

    def run_hand() -> int:
        for record in records:
            hand_written(record)
        return len(records)

    def run_jmespath() -> int:
        for record in records:
            jmes(record)
        return len(records)

    rates = interleaved_best({"compiled": run_compiled, "hand": run_hand, "jmespath": run_jmespath}, repeats=5)
    vs_hand = rates["compiled"] / rates["hand"]
    vs_jmes = rates["compiled"] / rates["jmespath"]
    ok = vs_hand >= 0.6 and vs_jmes >= 5
    lines = [
        f"records: {RECORDS} distinct 20-field records, outputs verified identical across all three",
        f"compiled mapping: {rates['compiled']:,.0f} records/s (median {rates['compiled_median']:,.0f})",
        f"hand-written Python: {rates['hand']:,.0f} records/s (median {rates['hand_median']:,.0f})",
        f"jmespath (custom functions for maps, date, decimal): {rates['jmespath']:,.0f} records/s",
        f"ratio compiled / hand-written: {vs_hand:.2f}x (target >= 0.6x)",
        f"ratio compiled / jmespath: {vs_jmes:.2f}x (target >= 5x)",
        f"verdict: {'target met' if ok else 'TARGET MISSED'}",
    ]
    print(
        f"mapping: compiled {rates['compiled']:,.0f}/s, hand {rates['hand']:,.0f}/s,"
        f" jmespath {rates['jmespath']:,.0f}/s"
        f" -> {vs_hand:.2f}x hand, {vs_jmes:.2f}x jmespath"
    )
    record_result("Mapping (20-field record)", lines)
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
