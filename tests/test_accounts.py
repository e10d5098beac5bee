"""Accounts for people: the site's own sign-in page, and an API token a user makes and revokes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_an_anonymous_visitor_of_predict_gets_the_sign_in_page_saying_what_signing_in_gives():
    page = Client().get("/predict/", follow=True)
    assert page.redirect_chain[-1][0] == "/accounts/sign-in/?next=/predict/"
    html = page.content.decode()
    assert "needs an account" in html and "What signing in gives" in html and "API token" in html
    assert "/admin/login/" not in html and 'href="/admin/"' not in html  # the admin is for staff


def test_a_user_signs_in_makes_a_token_that_the_api_accepts_and_revokes_it():
    User.objects.create_user("ada", password="lovelace")
    browser = Client()
    refused = browser.post("/accounts/sign-in/", {"username": "ada", "password": "wrong", "next": "/predict/"})
    assert refused.status_code == 200 and "did not match" in refused.content.decode()
    signed_in = browser.post("/accounts/sign-in/", {"username": "ada", "password": "lovelace", "next": "/predict/"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/predict/"
    assert browser.get("/predict/").status_code == 200
    assert "You have no API token" in browser.get("/accounts/token/").content.decode()

    browser.post("/accounts/token/", {"action": "make"})
    key = User.objects.get(username="ada").auth_token.key
    assert key in browser.get("/accounts/token/").content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.post("/api/predict/", {}).status_code == 400  # signed in: the form is checked (no image)
    browser.post("/accounts/token/", {"action": "renew"})
    assert api.post("/api/predict/", {}).status_code == 401  # the old key stopped working
    browser.post("/accounts/token/", {"action": "revoke"})
    assert not Token.objects.filter(user__username="ada").exists()
    signed_out = browser.post("/accounts/sign-out/")
    assert signed_out.status_code == 302 and browser.get("/predict/").status_code == 302
