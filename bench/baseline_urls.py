"""The events benchmark's baseline view: POST JSON → one INSERT → 202 (bench only, not in the product's URLs)."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bench_event (id bigserial PRIMARY KEY, event_type varchar(100) NOT NULL, "
    "received_at timestamptz NOT NULL DEFAULT now(), body jsonb NOT NULL)"
)


@csrf_exempt
@require_POST
def bare_insert(request: HttpRequest, system_slug: str, event_type: str) -> JsonResponse:
    """Store the body as is, one row per request: the least a web process can do with an event."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_event (event_type, body) VALUES (%s, %s) RETURNING id",
            [event_type, request.body.decode()],
        )
        (row_id,) = cursor.fetchone()
    return JsonResponse({"id": row_id}, status=202)


urlpatterns = [path("api/v1/inbound/<slug:system_slug>/<str:event_type>/", bare_insert)]
