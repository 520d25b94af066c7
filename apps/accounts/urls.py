from django.urls import path, re_path

from apps.accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("profile/", views.profile_view, name="profile"),
    path("team/", views.team_view, name="team"),
    re_path(
        r"^team/(?P<user_id>\d+)/(?P<action>role|deactivate|reactivate|delete)/$",
        views.member_action_view,
        name="member-action",
    ),
    path("team/invitations/<int:invitation_id>/revoke/", views.invitation_revoke_view, name="invitation-revoke"),
    path("invitations/accept/<str:token>/", views.invitation_accept_view, name="invitation-accept"),
    path("api-keys/", views.api_keys_view, name="api-keys"),
    path("api-keys/<int:api_key_id>/revoke/", views.api_key_revoke_view, name="api-key-revoke"),
    path("audit/", views.audit_view, name="audit"),
    path("password-reset/", views.password_reset_request_view, name="password-reset"),
    path("password-reset/<str:uidb64>/<str:token>/", views.password_reset_confirm_view, name="password-reset-confirm"),
]
