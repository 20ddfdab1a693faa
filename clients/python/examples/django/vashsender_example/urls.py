from django.urls import path

from campaigns import views

urlpatterns = [
    path("campaigns/<str:campaign_id>/send", views.send_campaign_view, name="send-campaign"),
    path("tasks/<str:task_id>", views.task_status_view, name="task-status"),
    path("tasks/<str:task_id>/progress", views.task_progress_view, name="task-progress"),
]
