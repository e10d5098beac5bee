"""Accounts for people: signing in in the site's own style, and the API token of the signed-in user."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from catalogue.services.accounts import api_token, make_api_token, revoke_api_token


class SignIn(auth_views.LoginView):
    """The sign-in form, with what signing in gives, so that a visitor sent here from /predict/ knows why."""

    template_name = "webui/sign_in.html"
    redirect_authenticated_user = True


class SignOut(auth_views.LogoutView):
    """Signing out (a POST, as Django asks), back to the home page."""

    next_page = "webui:home"


@login_required
@require_http_methods(["GET", "POST"])
def token(request: HttpRequest) -> HttpResponse:
    """The user's API token: shown, made (or made anew) and revoked."""
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            revoke_api_token(request.user)
        else:
            make_api_token(request.user)
        return redirect("webui:token")
    return render(request, "webui/token.html", {"token": api_token(request.user)})
