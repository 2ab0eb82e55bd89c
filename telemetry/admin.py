"""Admin for robots (provision, rotate, revoke), their sessions and history, and alert rules and alerts.

Live state is read-only, from Redis.
"""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db import transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from telemetry import presence, robots
from telemetry.frames import METRICS
from telemetry.models import Alert, AlertRule, Robot, RobotSession, TelemetrySample

logger = logging.getLogger(__name__)

RECENT_SESSIONS = 20
# What a robot's presence is shown as when Redis did not answer, and when it has none.
UNKNOWN = object()
ABSENT = {"connected": False, "reporting": False}
TOKEN_MESSAGE = "New token for robot {robot_id}. Store it now: it is shown only once. {token}"
SESSION_FIELDS = [
    "connection_id",
    "connected_at",
    "disconnected_at",
    "reason",
    "close_code",
    "frames_accepted",
    "frames_rejected",
]


def _attach_presence(robot_list: list[Robot]) -> None:
    states = presence.robot_states_or_none([robot.robot_id for robot in robot_list])
    for robot in robot_list:
        robot._presence = UNKNOWN if states is None else states.get(robot.robot_id, ABSENT)


class PresenceChangeList(ChangeList):
    """Reads the presence of the whole page in one call, instead of one call per row and column."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        _attach_presence(list(self.result_list))


class RecentSessionsFormSet(BaseInlineFormSet):
    def get_queryset(self) -> QuerySet:
        # A busy robot has thousands of sessions; its change page shows the latest ones.
        if not hasattr(self, "_queryset"):
            self._queryset = super().get_queryset()[:RECENT_SESSIONS]
        return self._queryset


class RobotSessionInline(admin.TabularInline):
    model = RobotSession
    formset = RecentSessionsFormSet
    fields = readonly_fields = SESSION_FIELDS
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"Recent sessions (latest {RECENT_SESSIONS})"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Robot)
class RobotAdmin(admin.ModelAdmin):
    list_display = ["robot_id", "name", "is_active", "connected", "reporting", "last_seen_at"]
    list_filter = ["is_active"]
    search_fields = ["robot_id", "name"]
    actions = ["rotate_tokens", "revoke_robots"]
    inlines = [RobotSessionInline]

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return PresenceChangeList

    def get_fields(self, request: HttpRequest, obj: Robot | None = None) -> list[str]:
        if obj is None:
            return ["robot_id", "name", "is_active"]
        return ["robot_id", "name", "is_active", "connected", "reporting", "last_seen_at", "created_at", "sessions"]

    def get_readonly_fields(self, request: HttpRequest, obj: Robot | None = None) -> list[str]:
        if obj is None:
            return []
        # robot_id is the robot's identity on the wire and in history: not renamed here.
        return ["robot_id", "connected", "reporting", "last_seen_at", "created_at", "sessions"]

    def _state(self, robot: Robot, key: str) -> bool | None:
        if not hasattr(robot, "_presence"):  # the change page: one robot
            _attach_presence([robot])
        return None if robot._presence is UNKNOWN else bool(robot._presence[key])

    @admin.display(boolean=True, description="connected")
    def connected(self, robot: Robot) -> bool | None:
        return self._state(robot, "connected")

    @admin.display(boolean=True, description="reporting")
    def reporting(self, robot: Robot) -> bool | None:
        return self._state(robot, "reporting")

    @admin.display(description="sessions")
    def sessions(self, robot: Robot) -> str:
        url = reverse("admin:telemetry_robotsession_changelist") + f"?robot__id__exact={robot.pk}"
        return format_html('<a href="{}">All {} sessions</a>', url, robot.sessions.count())

    def save_model(self, request: HttpRequest, obj: Robot, form, change: bool) -> None:
        token = None if change else robots.assign_new_token(obj)
        super().save_model(request, obj, form, change)
        if token is not None:
            messages.warning(request, TOKEN_MESSAGE.format(robot_id=obj.robot_id, token=token))
        if change and "is_active" in form.changed_data and not obj.is_active:
            robot_id = obj.robot_id
            transaction.on_commit(lambda: robots.close_live_sessions([robot_id]))

    def delete_model(self, request: HttpRequest, obj: Robot) -> None:
        robot_id = obj.robot_id
        super().delete_model(request, obj)
        transaction.on_commit(lambda: robots.close_live_sessions([robot_id]))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        robot_ids = list(queryset.values_list("robot_id", flat=True))
        super().delete_queryset(request, queryset)
        transaction.on_commit(lambda: robots.close_live_sessions(robot_ids))

    @admin.action(description="Rotate the token of the selected robots (shown once)", permissions=["change"])
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        for robot in queryset:
            token = robots.rotate_token(robot)
            messages.warning(request, TOKEN_MESSAGE.format(robot_id=robot.robot_id, token=token))

    @admin.action(description="Revoke the selected robots and close their live sessions", permissions=["change"])
    def revoke_robots(self, request: HttpRequest, queryset: QuerySet) -> None:
        robot_ids = list(queryset.values_list("robot_id", flat=True))
        changed = robots.revoke_robots(robot_ids)
        self.message_user(
            request,
            f"Revoked {changed} robot(s); their live sessions are being closed (4403).",
            messages.SUCCESS,
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """History and audit rows are written by the service only."""

    show_full_result_count = False  # no COUNT(*) over a large table on every page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RobotSession)
class RobotSessionAdmin(ReadOnlyAdmin):
    list_display = [SESSION_FIELDS[0], "robot", *SESSION_FIELDS[1:]]
    list_filter = ["reason"]
    list_select_related = ["robot"]
    search_fields = ["connection_id", "robot__robot_id"]


@admin.register(TelemetrySample)
class TelemetrySampleAdmin(ReadOnlyAdmin):
    list_display = ["robot", "reported_at", "seq", *METRICS]
    list_select_related = ["robot"]
    search_fields = ["robot__robot_id"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "metric", "op", "threshold", "for_seconds", "clear_threshold", "enabled"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "metric"]


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "active"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("true", "active"), ("false", "cleared")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("true", "false"):
            return queryset.filter(cleared_at__isnull=self.value() == "true")
        return queryset


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["rule", "robot", "raised_at", "cleared_at", "value", "peak"]
    list_filter = [ActiveFilter, "rule"]
    list_select_related = ["rule", "robot"]
    search_fields = ["robot__robot_id"]
