from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Prefetch

from metrics.charts import MAX_POINTS, history_chart_svg, increases, sparkline_svg
from metrics.models import Counter, CounterSnapshot, StreamCursor, format_labels

TREND_POINTS = 30
SNAPSHOTS_PER_PAGE = 50


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows only the service writes: staff may look at them, not add, change or delete them.

    Counters are created by the aggregation and deleting one breaks its history; snapshots are pruned
    by METRICS_SNAPSHOT_RETENTION_DAYS; deleting the cursor would count the whole stream again.
    Without the delete permission the admin also drops its "delete selected" action.
    """

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Counter)
class CounterAdmin(ViewOnlyAdmin):
    list_display = ["name", "labels_text", "value", "updated_at", "trend"]
    list_filter = ["name"]
    search_fields = ["name"]
    fields = ["name", "labels_text", "value", "updated_at"]
    readonly_fields = fields
    change_form_template = "admin/metrics/counter/change_form.html"

    def get_queryset(self, request):
        # One query for all the rows' sparklines (a sliced prefetch uses a window function).
        recent = CounterSnapshot.objects.order_by("-taken_at", "-id").only("counter_id", "value", "taken_at")
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("snapshots", queryset=recent[:TREND_POINTS], to_attr="recent_snapshots"))
        )

    @admin.display(description="labels")
    def labels_text(self, counter: Counter) -> str:
        return format_labels(counter.labels) or "-"

    @admin.display(description="trend")
    def trend(self, counter: Counter):
        values = [snapshot.value for snapshot in reversed(getattr(counter, "recent_snapshots", []))]
        return sparkline_svg(values) or "-"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        counter = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if counter is not None:
            history = CounterSnapshot.objects.filter(counter=counter)
            increase = request.GET.get("chart") == "increase"
            # The increase of the oldest charted snapshot needs the one before it.
            wanted = MAX_POINTS + 1 if increase else MAX_POINTS
            newest = list(history.order_by("-taken_at", "-id").values_list("taken_at", "value", "note")[:wanted])
            charted = increases(newest[::-1]) if increase else newest[::-1]
            page = Paginator(history.order_by("-taken_at", "-id"), SNAPSHOTS_PER_PAGE).get_page(
                request.GET.get("snapshots_page")
            )
            extra_context.update(
                history_chart=history_chart_svg(charted),
                history_total=page.paginator.count,
                history_charted=len(charted),
                chart_increase=increase,
                snapshots_page=page,
            )
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(CounterSnapshot)
class CounterSnapshotAdmin(ViewOnlyAdmin):
    list_display = ["counter", "value", "taken_at", "gap", "note"]
    list_filter = ["gap", "counter__name"]
    list_select_related = ["counter"]
    date_hierarchy = "taken_at"


@admin.register(StreamCursor)
class StreamCursorAdmin(ViewOnlyAdmin):
    list_display = ["stream", "last_id", "position", "updated_at"]
