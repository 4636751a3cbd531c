"""Security settings, applied to integrationhub.settings by `apply(globals())` at its end.

Always: API keys and their scopes, throttles, the JSON limits, the CSP header, the login lockout, password
validators and the self-hosted API docs. With DEBUG off (production): secure cookies, HSTS, and an HTTPS
redirect when HUB_SECURE_SSL_REDIRECT is on. The redirect is off by default so the embedded default
answers on plain http://127.0.0.1; production behind TLS turns it on and `manage.py check --deploy` is
then clean (see docs/api.md, "Production settings").
"""

from __future__ import annotations

from typing import Any

from integrationhub.env import env_bool, env_str

# Scripts only from this origin (the admin and the API docs load theirs from static/); inline styles stay
# allowed because Django's admin templates use style attributes.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _insert_after(items: list[str], anchor: str, item: str) -> list[str]:
    if item in items:
        return items
    index = items.index(anchor) + 1 if anchor in items else len(items)
    return [*items[:index], item, *items[index:]]


def apply(settings: dict[str, Any]) -> None:
    """Add the security settings to the settings module's namespace (`apply(globals())`)."""
    debug = bool(settings.get("DEBUG"))

    # --- API: keys, scopes, throttles, input limits ---------------------------------------------------------
    rest = settings["REST_FRAMEWORK"]
    rest["DEFAULT_AUTHENTICATION_CLASSES"] = [
        # First: its authenticate_header makes an unauthenticated API call a 401 naming the scheme.
        "integrationhub.authentication.ApiKeyAuthentication",
        *[
            c
            for c in rest.get("DEFAULT_AUTHENTICATION_CLASSES", [])
            if "ApiKeyAuthentication" not in c and "AnonymousBudgetAuthentication" not in c
        ],
        # Last: reached only by anonymous calls, whose budget it spends before permissions refuse them.
        "integrationhub.authentication.AnonymousBudgetAuthentication",
    ]
    rest["DEFAULT_PERMISSION_CLASSES"] = [
        "integrationhub.authentication.ApiKeyScopePermission",
        *[c for c in rest.get("DEFAULT_PERMISSION_CLASSES", []) if "ApiKeyScopePermission" not in c],
    ]
    rest["DEFAULT_THROTTLE_CLASSES"] = [
        "integrationhub.throttling.ApiKeyRateThrottle",
        "integrationhub.throttling.AnonymousRateThrottle",
    ]
    rest["DEFAULT_PAGINATION_CLASS"] = "integrationhub.api.pagination.HubLimitOffsetPagination"
    rest["DEFAULT_PARSER_CLASSES"] = [
        "integrationhub.parsers.LimitedJSONParser",
        "integrationhub.parsers.NulRefusingFormParser",
        "integrationhub.parsers.NulRefusingMultiPartParser",
    ]
    settings["HUB_API_RATE"] = env_str("HUB_API_RATE", "600/min")
    settings["HUB_API_ANON_RATE"] = env_str("HUB_API_ANON_RATE", "120/min")
    settings["HUB_API_AUTH_FAILURE_RATE"] = env_str("HUB_API_AUTH_FAILURE_RATE", "30/min")
    settings["HUB_JSON_MAX_DEPTH"] = int(env_str("HUB_JSON_MAX_DEPTH", "32"))
    # Inbound events per connected system (its own `inbound_rate` overrides this default).
    settings["HUB_INBOUND_RATE"] = env_str("HUB_INBOUND_RATE", "200/s")

    # --- API docs served from static/ (drf-spectacular-sidecar), never a CDN -------------------------------
    apps = list(settings["INSTALLED_APPS"])
    if "drf_spectacular_sidecar" not in apps:
        apps = _insert_after(apps, "drf_spectacular", "drf_spectacular_sidecar")
    # Two-factor login (TOTP): django-otp's models; the login flow is integrationhub.twofactor.
    apps = _insert_after(apps, "django_celery_beat", "django_otp")
    apps = _insert_after(apps, "django_otp", "django_otp.plugins.otp_totp")
    settings["INSTALLED_APPS"] = apps
    settings["SPECTACULAR_SETTINGS"] = {
        **settings.get("SPECTACULAR_SETTINGS", {}),
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
        # Error answers (problem+json) on every operation, then the inbound webhook (a plain Django view).
        "POSTPROCESSING_HOOKS": [
            "drf_spectacular.hooks.postprocess_schema_enums",
            "integrationhub.api.schema.problem_responses_hook",
            "sync.api.schema.inbound_webhook_hook",
        ],
        # One name per choice set: the deploy check fails on drf-spectacular's enum-collision warnings.
        "ENUM_NAME_OVERRIDES": {
            **settings.get("SPECTACULAR_SETTINGS", {}).get("ENUM_NAME_OVERRIDES", {}),
            "ApiKeyStatusEnum": ["active", "expired", "revoked"],
            "MappingStatusEnum": "mappings.choices.MappingStatus",
            "CanonicalEntityNameEnum": "mappings.choices.CanonicalEntityName",
        },
        "DESCRIPTION": (
            "Versioned REST API of the Integration Hub. v1 is stable; a deprecated operation answers with "
            "`Deprecation` and `Sunset` headers. Authenticate with a browser session or `Authorization: "
            "Api-Key <key>`. Errors are RFC 9457 problem+json."
        ),
    }

    # --- Browser: CSP, login lockout, passwords ----------------------------------------------------------
    settings["HUB_CONTENT_SECURITY_POLICY"] = env_str("HUB_CONTENT_SECURITY_POLICY", DEFAULT_CSP)
    middleware = _insert_after(
        list(settings["MIDDLEWARE"]),
        "django.middleware.security.SecurityMiddleware",
        "integrationhub.middleware.ContentSecurityPolicyMiddleware",
    )
    middleware = _insert_after(
        middleware, "integrationhub.logging.CorrelationIdMiddleware", "integrationhub.middleware.ApiBodyLimitMiddleware"
    )
    # Every audit event written while a request is served names its actor, API key, address and user agent.
    settings["MIDDLEWARE"] = _insert_after(
        middleware,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "integrationhub.middleware.AuditContextMiddleware",
    )
    settings["HUB_LOGIN_MAX_FAILURES"] = int(env_str("HUB_LOGIN_MAX_FAILURES", "5"))
    settings["HUB_LOGIN_LOCKOUT_MINUTES"] = int(env_str("HUB_LOGIN_LOCKOUT_MINUTES", "15"))
    # Failed logins from one address for any user names, per HUB_LOGIN_LOCKOUT_MINUTES window (password spraying).
    settings["HUB_LOGIN_MAX_FAILURES_PER_ADDRESS"] = int(env_str("HUB_LOGIN_MAX_FAILURES_PER_ADDRESS", "30"))
    settings["AUTHENTICATION_BACKENDS"] = [
        "integrationhub.authentication.LoginLockoutBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    # Comma-separated group names whose members must use two-factor login (empty: optional for everyone).
    settings["HUB_REQUIRE_2FA_GROUPS"] = [
        g.strip() for g in env_str("HUB_REQUIRE_2FA_GROUPS", "").split(",") if g.strip()
    ]
    settings["OTP_TOTP_ISSUER"] = env_str("HUB_OTP_ISSUER", "Integration Hub")
    # Admins reset devices; nobody reads another user's secret or QR code in the admin.
    settings["OTP_ADMIN_HIDE_SENSITIVE_DATA"] = True
    validators = list(settings.get("AUTH_PASSWORD_VALIDATORS", []))
    names = {v["NAME"] for v in validators}
    for name in (
        "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "django.contrib.auth.password_validation.NumericPasswordValidator",
    ):
        if name not in names:
            validators.append({"NAME": name})
    settings["AUTH_PASSWORD_VALIDATORS"] = validators

    if debug:
        return

    # --- Production (DEBUG off) ------------------------------------------------------------------------------
    ssl_redirect = env_bool("HUB_SECURE_SSL_REDIRECT", False)
    settings["SECURE_SSL_REDIRECT"] = ssl_redirect
    # Probes call these over plain HTTP inside the cluster.
    settings["SECURE_REDIRECT_EXEMPT"] = [r"^healthz$", r"^readyz$"]
    if env_bool("HUB_SECURE_PROXY_SSL_HEADER", False):
        # Only behind a proxy that always sets (and strips incoming) X-Forwarded-Proto.
        settings["SECURE_PROXY_SSL_HEADER"] = ("HTTP_X_FORWARDED_PROTO", "https")
    # Cookies are secure whenever the hub is served over HTTPS; SESSION_COOKIE_SECURE/CSRF_COOKIE_SECURE override.
    settings["SESSION_COOKIE_SECURE"] = env_bool("SESSION_COOKIE_SECURE", ssl_redirect)
    settings["CSRF_COOKIE_SECURE"] = env_bool("CSRF_COOKIE_SECURE", ssl_redirect)
    # The HSTS header only goes out on HTTPS responses, so it is harmless on a plain-HTTP local run.
    settings["SECURE_HSTS_SECONDS"] = int(env_str("HUB_HSTS_SECONDS", "31536000"))
    settings["SECURE_HSTS_INCLUDE_SUBDOMAINS"] = env_bool("HUB_HSTS_INCLUDE_SUBDOMAINS", True)
    settings["SECURE_HSTS_PRELOAD"] = env_bool("HUB_HSTS_PRELOAD", False)
    settings["SESSION_COOKIE_HTTPONLY"] = True
    settings["SESSION_COOKIE_SAMESITE"] = "Lax"
    settings["CSRF_COOKIE_SAMESITE"] = "Lax"
