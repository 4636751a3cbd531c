"""Every HubHistoryAdmin on the real admin site gets the compare page, ahead of simple-history's version URL."""

from __future__ import annotations

from django.contrib import admin
from django.urls import resolve, reverse

from integrationhub.admin_base import HubHistoryAdmin


def test_every_history_admin_has_a_compare_url_that_wins_over_the_version_url():
    # given the admins registered so far
    history_admins = [ma for ma in admin.site._registry.values() if isinstance(ma, HubHistoryAdmin)]
    assert history_admins, "no HubHistoryAdmin is registered on admin.site"

    for model_admin in history_admins:
        opts = model_admin.model._meta
        # when
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_history_compare", args=[1])

        # then "compare" is not taken for a version id by simple-history's "<pk>/history/<version>/"
        assert url == f"/admin/{opts.app_label}/{opts.model_name}/1/history/compare/"
        assert resolve(url).url_name == f"{opts.app_label}_{opts.model_name}_history_compare"
