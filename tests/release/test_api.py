"""The read API shows each artifact's phase and hides proprietary, withdrawn and unsealed work
from everyone who is not staff, exactly as if it did not exist."""

import pytest
from rest_framework.test import APIClient

from release.models import Phase
from tests.factories import make_release

MIXED = {
    "base": Phase.PROPRIETARY,
    "instruct": Phase.GATED,
    "tokenizer": Phase.OPEN,
    "old": Phase.WITHDRAWN,
}


@pytest.fixture
def mixed(db):
    return make_release(org="acme", name="mixed", artifacts=MIXED)


@pytest.fixture
def secret(db):
    return make_release(org="acme", name="secret", artifacts={"base": Phase.PROPRIETARY})


def login(api, user):
    if user is not None:
        api.force_authenticate(user)
    return api


def staff_client(user):
    """A client of its own, so a test can compare what staff and a non-staff client see."""
    return login(APIClient(), user)


@pytest.fixture(params=["anonymous", "outsider"])
def non_staff(request, api, outsider):
    return login(api, outsider if request.param == "outsider" else None)


def artifact_phases(body):
    return {a["name"]: a["phase"] for v in body["versions"] for a in v["artifacts"]}


def test_list_shows_only_public_artifacts_to_non_staff(non_staff, mixed, secret):
    response = non_staff.get("/api/v1/models/")

    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["results"]] == ["acme/mixed"]
    assert artifact_phases(body["results"][0]) == {"instruct": "gated", "tokenizer": "open"}


def test_list_shows_everything_to_staff(api, staff, mixed, secret):
    body = login(api, staff).get("/api/v1/models/").json()

    assert [m["id"] for m in body["results"]] == ["acme/mixed", "acme/secret"]
    assert artifact_phases(body["results"][0]) == {k: str(v) for k, v in MIXED.items()}


def test_list_filters_by_org_and_phase(api, mixed, secret):
    make_release(org="other", name="open-one", artifacts={"base": Phase.OPEN})

    by_org = api.get("/api/v1/models/?org=other").json()["results"]
    gated = api.get("/api/v1/models/?phase=gated").json()["results"]
    proprietary = api.get("/api/v1/models/?phase=proprietary").json()["results"]

    assert [m["id"] for m in by_org] == ["other/open-one"]
    assert [m["id"] for m in gated] == ["acme/mixed"]
    assert proprietary == []


def test_wholly_proprietary_model_is_404_for_non_staff(non_staff, secret):
    for url in (
        "/api/v1/models/acme/secret/",
        "/api/v1/models/acme/secret/versions/",
        "/api/v1/models/acme/secret/versions/v1/",
        "/api/v1/models/acme/secret/versions/v1/files/",
    ):
        response = non_staff.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "model_not_found"


def test_staff_sees_a_proprietary_model(api, staff, secret):
    response = login(api, staff).get("/api/v1/models/acme/secret/")

    assert response.status_code == 200
    assert artifact_phases(response.json()) == {"base": "proprietary"}


def test_detail_includes_card_and_phases(non_staff, mixed):
    body = non_staff.get("/api/v1/models/acme/mixed/").json()

    assert body["id"] == "acme/mixed"
    assert "card" in body
    assert body["versions"][0]["commit"] == mixed.commit
    assert artifact_phases(body) == {"instruct": "gated", "tokenizer": "open"}


def test_files_list_only_visible_artifacts(non_staff, staff, mixed):
    url = "/api/v1/models/acme/mixed/versions/v1/files/"
    public = non_staff.get(url).json()["results"]
    everything = staff_client(staff).get(url).json()["results"]

    assert {f["artifact"] for f in public} == {"instruct", "tokenizer"}
    assert {f["artifact"] for f in everything} == set(MIXED)
    assert public[0].keys() == {"path", "size", "sha256", "artifact", "phase"}


def test_version_found_by_commit_id(non_staff, mixed):
    response = non_staff.get(f"/api/v1/models/acme/mixed/versions/{mixed.commit}/")

    assert response.status_code == 200
    assert response.json()["name"] == "v1"


def test_unknown_version_is_404(non_staff, mixed):
    response = non_staff.get("/api/v1/models/acme/mixed/versions/v9/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "version_not_found"


def test_unsealed_version_is_invisible_to_non_staff(non_staff, staff, mixed):
    make_release(
        org="acme", name="mixed", version="v2", artifacts={"base": Phase.PROPRIETARY}, seal=False
    )

    public = non_staff.get("/api/v1/models/acme/mixed/versions/").json()["results"]
    everything = staff_client(staff).get("/api/v1/models/acme/mixed/versions/").json()["results"]

    assert [v["name"] for v in public] == ["v1"]
    assert [v["name"] for v in everything] == ["v2", "v1"]
    assert non_staff.get("/api/v1/models/acme/mixed/versions/v2/").status_code == 404


def test_inactive_staff_is_treated_as_outsider(api, staff, secret):
    staff.is_active = False
    staff.save()

    assert login(api, staff).get("/api/v1/models/acme/secret/").status_code == 404


def test_list_query_count_does_not_grow_with_models(api, staff, django_assert_max_num_queries):
    for index in range(12):
        make_release(org="acme", name=f"m{index}", artifacts={"base": Phase.OPEN, "t": Phase.GATED})

    with django_assert_max_num_queries(6):
        response = api.get("/api/v1/models/")

    assert response.json()["count"] == 12


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/?format=json")
    docs = api.get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/models/" in paths
    assert "/api/v1/models/{org}/{name}/versions/{revision}/files/" in paths
    assert docs.status_code == 200


@pytest.mark.django_db
def test_write_methods_are_refused(api, staff):
    response = login(api, staff).post("/api/v1/models/", {"org": "x", "name": "y"})

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_partner_organisation_members_see_the_proprietary_model_early(api, outsider, secret):
    from licensing.models import GatePolicy, PartnerOrganisation
    from tests.factories import make_user

    partner = make_user("agency-analyst")
    agency = PartnerOrganisation.objects.create(name="Safety Institute")
    agency.members.add(partner)
    GatePolicy.objects.create(model=secret.model).partners.add(agency)

    member_view = login(api, partner).get("/api/v1/models/acme/secret/")
    stranger_view = staff_client(outsider).get("/api/v1/models/acme/secret/")
    anonymous_view = APIClient().get("/api/v1/models/acme/secret/")

    assert member_view.status_code == 200
    assert artifact_phases(member_view.json()) == {"base": "proprietary"}
    assert stranger_view.status_code == 404
    assert anonymous_view.status_code == 404


def test_partner_of_one_model_sees_nothing_extra_elsewhere(api, secret):
    from licensing.models import GatePolicy, PartnerOrganisation
    from tests.factories import make_user

    other = make_release(org="acme", name="other-secret", artifacts={"base": Phase.PROPRIETARY})
    partner = make_user("agency-analyst")
    agency = PartnerOrganisation.objects.create(name="Safety Institute")
    agency.members.add(partner)
    GatePolicy.objects.create(model=secret.model).partners.add(agency)

    response = login(api, partner).get("/api/v1/models/")

    assert [m["id"] for m in response.json()["results"]] == ["acme/secret"]
    assert other.model.repo_id not in response.content.decode()
