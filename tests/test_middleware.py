"""Hostile input never gives a 500: a NUL byte, which PostgreSQL text cannot hold, in a path,
a parameter, the Basic-auth user name, a cookie or a JSON body gets a 400 that says where
(or, from the cone search, the standard's error VOTable)."""

from __future__ import annotations

import base64
import io
import warnings

import pytest
from astropy.io.votable import parse
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalogue.middleware import problem_with
from tests.test_api import catalogue  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.django_db

#: The requests the probe found answered with a 500.
NUL_REQUESTS = [
    "/api/galaxies/1000/?survey=%00",
    "/api/surveys/%00/",
    "/surveys/%00/",
    "/surveys/%00/experiments/",
    "/surveys/%00/experiments.csv",
    "/api/galaxies/?survey=ap%00i",
    "/catalogue/?survey=%00",
    "/api/galaxies/?model=g%00_morph&survey=api",
]


@pytest.mark.usefixtures("catalogue")
@pytest.mark.parametrize("url", NUL_REQUESTS)
def test_a_nul_byte_in_a_path_or_parameter_is_a_400_naming_it(url):
    response = APIClient().get(url)
    assert response.status_code == 400
    text = response.content.decode()
    assert "NUL byte" in text and ("path" in text or "parameter" in text)
    if url.startswith("/api/"):
        assert response["Content-Type"] == "application/json" and "NUL byte" in response.json()["detail"]


@pytest.mark.usefixtures("catalogue")
def test_a_nul_byte_in_the_cone_search_gets_an_error_votable():
    response = APIClient().get("/scs/?RA=150&DEC=2&SR=0.5&SURVEY=%00")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/xml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid VOTable, read without a warning
        document = parse(io.BytesIO(response.content))
    infos = {info.name: info.value for info in document.resources[0].infos}
    assert "NUL byte" in infos["Error"] and "SURVEY" in infos["Error"]


@pytest.mark.usefixtures("catalogue")
@pytest.mark.parametrize(
    ("method", "url"), [("get", "/api/surveys/"), ("get", "/api/galaxies/"), ("post", "/api/runs/"), ("get", "/")]
)
def test_a_basic_auth_user_name_with_a_nul_byte_is_a_400_everywhere(method, url):
    User.objects.create_user("boss", password="x", is_staff=True)
    credentials = base64.b64encode(b"bo\x00ss:x").decode()
    response = getattr(APIClient(), method)(url, HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert response.status_code == 400 and "Basic-auth credentials contain a NUL byte" in response.content.decode()


@pytest.mark.usefixtures("catalogue")
def test_a_nul_byte_in_a_json_body_is_a_400_not_a_500():
    client = APIClient()
    client.force_authenticate(User.objects.create_user("boss", password="x", is_staff=True))
    response = client.post("/api/runs/", {"survey": "ap\x00i", "stage": "preprocess"}, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"


def test_ordinary_requests_pass_untouched(rf):
    assert problem_with(rf.get("/api/galaxies/?survey=api&z_min=0.1")) == ""
    assert problem_with(rf.get("/", HTTP_AUTHORIZATION="Basic not-base64!")) == ""  # the authentication answers that
    assert problem_with(rf.get("/", HTTP_COOKIE="sessionid=ab\x00c")) == "the Cookie header contains a NUL byte"
