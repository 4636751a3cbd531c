"""Status words of the workflows app."""

from django.db import models


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    HELD = "held", "Held at a step"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    COMPLETED = "completed", "Completed"
    COMPENSATING = "compensating", "Compensating"
    COMPENSATED = "compensated", "Compensated (completed steps undone)"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    COMPENSATED = "compensated", "Compensated"
    COMPENSATION_FAILED = "compensation_failed", "Compensation failed"


ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.HELD, RunStatus.AWAITING_APPROVAL, RunStatus.COMPENSATING)
FINISHED_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.CANCELLED, RunStatus.REJECTED)


class PostingKind(models.TextChoices):
    POST = "post", "Posted"
    ADJUSTMENT = "adjustment", "Adjustment (the difference of a corrected entry)"
    REVERSAL = "reversal", "Reversal (a withdrawn entry)"


class PostingStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    POSTED = "posted", "Posted in the ERP"
    FAILED = "failed", "Rejected by the ERP (needs a person)"


# The opportunity-to-project saga's steps, in order. The KPI dashboard reads these exact names.
STEP_VALIDATE = "validate"
STEP_ENSURE_CLIENT = "ensure_client"
STEP_CREATE_ERP_PROJECT = "create_erp_project"
STEP_CREATE_PSA_PROJECT = "create_psa_project"
STEP_CREATE_WORKSPACE = "create_workspace"
STEP_RELEASE_STAFFING = "release_staffing"
STEP_PUBLISH_TO_CRM = "publish_to_crm"
OPPORTUNITY_STEPS = (
    STEP_VALIDATE,
    STEP_ENSURE_CLIENT,
    STEP_CREATE_ERP_PROJECT,
    STEP_CREATE_PSA_PROJECT,
    STEP_CREATE_WORKSPACE,
    STEP_RELEASE_STAFFING,
    STEP_PUBLISH_TO_CRM,
)

# The client-master flow's steps, in order.
STEP_CHECK_DUPLICATES = "check_duplicates"
STEP_ERP_CLIENT = "erp_client"
STEP_PSA_CLIENT = "psa_client"
CLIENT_MASTER_STEPS = (STEP_CHECK_DUPLICATES, STEP_ERP_CLIENT, STEP_PSA_CLIENT)


class MatchKey(models.TextChoices):
    """Which key made a known client a duplicate suspect."""

    NAME = "name", "Similar name"
    DOMAIN = "domain", "Same web domain"
    TAX_ID = "tax_id", "Same tax id"


class DirectorySource(models.TextChoices):
    HUB = "hub", "Known to the hub"
    SYSTEM = "system", "Listed by an ERP or PSA"
