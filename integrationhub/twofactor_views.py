"""Browser views of two-factor login: the admin login (password, then the code or enrolment), the code
page and the enrolment page. Thin: the decisions are in integrationhub.twofactor."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from integrationhub import twofactor
from integrationhub.authentication import client_ip, login_lockout
from integrationhub.errors import HubValidationError
from integrationhub.landing import role_landing_url


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app",
        max_length=12,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class HubAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, except that a locked-out login says so and for how long: Django's generic "enter
    a correct username and password" would send someone with the right password into more failed attempts."""

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except forms.ValidationError:
            lockout = login_lockout(username=self.cleaned_data.get("username") or "", ip=client_ip(self.request))
            if lockout is None:
                raise
            raise forms.ValidationError(lockout.message(), code="locked") from None


class HubLoginView(LoginView):
    """The admin login: a correct password logs in at once, or first asks for the code, or for enrolment."""

    form_class = HubAuthenticationForm
    template_name = "admin/login.html"

    def get_redirect_url(self, *args: Any, **kwargs: Any) -> str:
        # The admin's own index as "next" is no real destination: the user lands on their role's page instead.
        wanted = super().get_redirect_url(*args, **kwargs)
        return "" if wanted == reverse("admin:index") else wanted

    def get_default_redirect_url(self) -> str:
        user = getattr(self, "login_user", None) or self.request.user
        if getattr(user, "is_authenticated", False):
            return role_landing_url(user=user)
        return reverse("admin:index")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(admin.site.each_context(self.request))
        context.update({"title": "Log in", "subtitle": None, "app_path": self.request.get_full_path()})
        return context

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "GET" and admin.site.has_permission(request):
            return HttpResponseRedirect(role_landing_url(user=request.user))
        return super().dispatch(request, *args, **kwargs)

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        self.login_user = user  # the landing page depends on who signs in, before they are logged in
        step = twofactor.two_factor_login_step(user=user)
        if step == twofactor.TwoFactorStep.NONE:
            twofactor.pending_login_clear(request=self.request)
            return super().form_valid(form)
        twofactor.pending_login_start(request=self.request, user=user, next_url=self.get_success_url(), step=step)
        if step == twofactor.TwoFactorStep.ENROL:
            return redirect("two-factor-enrol")
        return redirect("two-factor-verify")


def _finish_login(request: HttpRequest, user: Any, pending: twofactor.PendingLogin) -> HttpResponse:
    twofactor.pending_login_clear(request=request)
    user.backend = pending.backend
    auth_login(request, user)
    return HttpResponseRedirect(pending.next_url or reverse("admin:index"))


def _page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> TemplateResponse:
    # Before the login completes the visitor is anonymous: no admin navigation to show.
    shared = {**admin.site.each_context(request), "is_nav_sidebar_enabled": request.user.is_authenticated}
    response = TemplateResponse(request, template, {**shared, **context}, status=status)
    response["Cache-Control"] = "no-store"
    return response


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
def two_factor_verify_view(request: HttpRequest) -> HttpResponse:
    """Second step of a login: the code from the user's authenticator app."""
    pending = twofactor.pending_login(request=request)
    if pending is None:
        return redirect("admin:login")
    user = get_user_model().objects.filter(pk=pending.user_id, is_active=True).first()
    if user is None:
        twofactor.pending_login_clear(request=request)
        return redirect("admin:login")
    if twofactor.two_factor_device(user=user) is None:
        return redirect("two-factor-enrol")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if twofactor.two_factor_verify(user=user, code=form.cleaned_data["code"], request=request):
            return _finish_login(request, user, pending)
        lockout = login_lockout(username=user.get_username(), ip=client_ip(request))
        form.add_error(
            "code", lockout.message() if lockout else "That code is not valid. Type the code your app shows now."
        )
    return _page(
        request,
        "integrationhub/two_factor_verify.html",
        {"title": "Two-factor login", "form": form, "username": user.get_username()},
        status=400 if form.errors else 200,
    )


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
def two_factor_enrol_view(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator app: for a logged-in user who opts in, or to finish a login that requires it."""
    pending = None
    if request.user.is_authenticated:
        user = request.user
    else:
        pending = twofactor.pending_login(request=request)
        found = get_user_model().objects.filter(pk=pending.user_id, is_active=True).first() if pending else None
        if found is None:
            return redirect("admin:login")
        if twofactor.two_factor_device(user=found) is not None:
            return redirect("two-factor-verify")
        user = found
    device = twofactor.two_factor_device(user=user)
    if device is not None:
        return _page(request, "integrationhub/two_factor_enrol.html", {"title": "Two-factor login", "device": device})
    setup = twofactor.two_factor_enrolment_start(user=user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            twofactor.two_factor_enrolment_confirm(user=user, code=form.cleaned_data["code"], request=request)
        except HubValidationError as error:
            form.add_error("code", f"{error.detail} {error.hint}".strip())
        else:
            if pending is not None:
                return _finish_login(request, user, pending)
            messages.success(request, "Two-factor login is on: your next login asks for a code.")
            return redirect("admin:index")
    return _page(
        request,
        "integrationhub/two_factor_enrol.html",
        {
            "title": "Set up two-factor login",
            "form": form,
            "required": pending is not None,
            "qr_svg": mark_safe(twofactor.device_qr_svg(setup)),  # noqa: S308  (SVG drawn by qrcode, no user input)
            "secret": twofactor.device_secret(setup),
            "username": user.get_username(),
        },
        status=400 if form.errors else 200,
    )
