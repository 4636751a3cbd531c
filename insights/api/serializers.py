"""API serializers of the insights app: the KPI response, field by field, so the OpenAPI schema is exact."""

from __future__ import annotations

from rest_framework import serializers

from insights.choices import KpiBucket, KpiRange


class KpiQuerySerializer(serializers.Serializer):
    """The query string of GET /api/v1/kpis/: a preset range, or custom start and end (ISO 8601)."""

    range = serializers.ChoiceField(choices=KpiRange.choices, default=KpiRange.LAST_7D)
    start = serializers.DateTimeField(required=False, help_text="Start of a custom range (range=custom).")
    end = serializers.DateTimeField(required=False, help_text="End (excluded) of a custom range (range=custom).")


class KpiRangeSerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=KpiRange.choices)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    bucket = serializers.ChoiceField(choices=KpiBucket.choices, help_text="The width of one point of the series.")


class DurationTrendPointSerializer(serializers.Serializer):
    bucket = serializers.DateTimeField(help_text="Start of the bucket (UTC).")
    count = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)


class ProjectActivationSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Projects whose staffing was released in the range.")
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)
    trend = DurationTrendPointSerializer(many=True)


class TimeToErpSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Approved entries delivered to the ERP in the range.")
    p50_seconds = serializers.FloatField(allow_null=True)
    p95_seconds = serializers.FloatField(allow_null=True)


class MilestoneBillingSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Milestone billing runs completed in the range.")
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)


class ExceptionCategoryRateSerializer(serializers.Serializer):
    category = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field, popped from the class by DRF
    items = serializers.IntegerField()
    rate = serializers.FloatField(
        allow_null=True, help_text="Items of the category per unit of work received (a fraction: 0.012 = 1.2 %)."
    )
    rate_percent = serializers.FloatField(allow_null=True, help_text="The rate in percent, one decimal (1.2).")


class ExceptionFlowRateSerializer(serializers.Serializer):
    flow = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field, popped from the class by DRF
    messages = serializers.IntegerField(help_text="Messages of the flow received in the range.")
    runs = serializers.IntegerField(help_text="Workflow runs of the flow started in the range without a message.")
    units = serializers.IntegerField(help_text="The flow's work the rate is taken against: messages + runs.")
    items = serializers.IntegerField()
    rate = serializers.FloatField(
        allow_null=True, help_text="Items per unit of work of the flow (a fraction); null without work, not zero."
    )
    rate_percent = serializers.FloatField(allow_null=True, help_text="The rate in percent, one decimal.")


class ExceptionRateSerializer(serializers.Serializer):
    messages = serializers.IntegerField(help_text="Messages received in the range.")
    runs = serializers.IntegerField(help_text="Workflow runs started in the range without a message.")
    units = serializers.IntegerField(help_text="The work the rates are taken against: messages + runs.")
    items = serializers.IntegerField(help_text="Exception items opened in the range.")
    rate = serializers.FloatField(allow_null=True, help_text="Items per unit of work (a fraction: 0.225 = 22.5 %).")
    rate_percent = serializers.FloatField(allow_null=True, help_text="The rate in percent, one decimal (22.5).")
    by_category = ExceptionCategoryRateSerializer(many=True)
    by_flow = ExceptionFlowRateSerializer(many=True)


class WaitingStatusSerializer(serializers.Serializer):
    status = serializers.CharField()
    count = serializers.IntegerField()


class BacklogSerializer(serializers.Serializer):
    messages_waiting = serializers.IntegerField(help_text="Messages received, mapped, validated or queued now.")
    waiting_by_status = WaitingStatusSerializer(many=True)
    items_held = serializers.IntegerField(help_text="Open exception items now.")
    oldest_item_created_at = serializers.DateTimeField(allow_null=True)
    oldest_item_age_seconds = serializers.FloatField(allow_null=True)


class ThroughputFlowSerializer(serializers.Serializer):
    flow = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field, popped from the class by DRF
    delivered = serializers.IntegerField()
    per_hour = serializers.FloatField(allow_null=True)
    series = serializers.ListField(child=serializers.IntegerField(), help_text="Delivered per bucket.")


class ThroughputSerializer(serializers.Serializer):
    bucket = serializers.ChoiceField(choices=KpiBucket.choices)
    buckets = serializers.ListField(child=serializers.DateTimeField(), help_text="Start of every bucket (UTC).")
    flows = ThroughputFlowSerializer(many=True)


class DeliverySuccessSerializer(serializers.Serializer):
    system_id = serializers.IntegerField(allow_null=True, help_text="Null for calls whose system was not recorded.")
    system = serializers.CharField(help_text="The connected system's name.")
    system_role = serializers.CharField(help_text="crm, psa, erp, collaboration, analytics or hr.")
    system_role_label = serializers.CharField()
    attempts = serializers.IntegerField()
    succeeded = serializers.IntegerField(help_text="Delivered, or found already applied at the target.")
    retryable_errors = serializers.IntegerField()
    terminal_errors = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True, help_text="A fraction: 0.975 = 97.5 %.")
    success_rate_percent = serializers.FloatField(
        allow_null=True, help_text="The success rate in percent, one decimal."
    )


class DuplicateSuspectSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    flow = serializers.CharField()


class DuplicateSuspectsSerializer(serializers.Serializer):
    open = serializers.IntegerField()
    oldest = DuplicateSuspectSerializer(many=True)


class KpiDashboardSerializer(serializers.Serializer):
    """Every KPI of the leaders' dashboard for one time range."""

    range = KpiRangeSerializer()
    project_activation = ProjectActivationSerializer()
    time_to_erp = TimeToErpSerializer()
    milestone_billing = MilestoneBillingSerializer()
    exception_rate = ExceptionRateSerializer()
    backlog = BacklogSerializer()
    throughput = ThroughputSerializer()
    delivery_success = DeliverySuccessSerializer(many=True)
    duplicate_suspects = DuplicateSuspectsSerializer()
    computed_at = serializers.DateTimeField(
        required=False, help_text="When the figures were computed (they are reused for HUB_KPI_CACHE_SECONDS)."
    )
