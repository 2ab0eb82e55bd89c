from __future__ import annotations

from django.urls import path

from fleet.events.views import EventListView

urlpatterns = [path("", EventListView.as_view(), name="event-list")]
