"""Status words and fixed vocabularies of the exception_queue app."""

from django.db import models


class ExceptionCategory(models.TextChoices):
    VALIDATION = "validation", "Validation"
    POLICY = "policy", "Policy rule"
    OWNERSHIP_CONFLICT = "ownership_conflict", "Ownership conflict"
    DUPLICATE_SUSPECT = "duplicate_suspect", "Duplicate suspect"
    TARGET_REJECTED = "target_rejected", "Rejected by the target"
    DEAD_LETTER = "dead_letter", "Dead letter"
    APPROVAL_REQUIRED = "approval_required", "Approval required"
    ACTIVATION_HELD = "activation_held", "Activation held"
    TARGET_RECORD_GONE = "target_record_gone", "Record gone at the target"
    UNKNOWN_RESOURCE = "unknown_resource", "Unknown resource (no ERP employee)"
    CLOSED_PERIOD = "closed_period", "Closed accounting period"
    RECONCILIATION_DIFFERENCE = "reconciliation_difference", "Reconciliation difference"


class ExceptionState(models.TextChoices):
    OPEN = "open", "Open"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    REPLAYED = "replayed", "Replayed"
    RESOLVED = "resolved", "Resolved"
    CANCELLED = "cancelled", "Cancelled"


class DecisionAction(models.TextChoices):
    REPLAY = "replay", "Replay"
    FIX_AND_REPLAY = "fix_and_replay", "Edit the payload and replay"
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    RESOLVE = "resolve", "Resolve"
    OVERRIDE = "override", "Approve an override of failed rules"
    RETRY_STEP = "retry_step", "Retry the held step"
    COMPENSATE = "compensate", "Compensate (undo completed steps)"
    CANCEL = "cancel", "Cancel the run"
    LINK_EXISTING = "link_existing", "Link to the existing record"
    CREATE_NEW = "create_new", "Create a new record"
    RECREATE = "recreate", "Re-create the record at the target"
    SKIP = "skip", "Skip: leave the target as it is"
    LINK_RESOURCE = "link_resource", "Link the person to an ERP employee and post"
    POST_NEXT_PERIOD = "post_next_period", "Post in the next open period"


class ReplayMapping(models.TextChoices):
    ORIGINAL = "original", "The mapping version the message was first mapped with"
    CURRENT = "current", "The mapping version published now"
