from django.urls import path

from apps.chat import views

app_name = "chat"

urlpatterns = [
    path("chat/", views.chat_view, name="chat"),
    path("chat/<int:conversation_id>/", views.chat_view, name="conversation"),
]
