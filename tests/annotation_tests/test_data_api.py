"""Items and pairs through the API: researchers and admins read them, with filters; labelers cannot."""

from tests.annotation_tests.test_exporting import project  # noqa: F401 - fixture
from tests.training_tests.conftest import ranked_project, tiny_version  # noqa: F401 - fixtures


def test_items_and_pairs(api_client, researcher, labeler, project):  # noqa: F811
    api_client.force_authenticate(researcher)
    items = api_client.get(f"/api/projects/{project.slug}/items/").json()
    assert items["count"] == 6 and {c["model_version"] for c in items["results"][0]["candidates"]} == {"tiny-policy"}
    flagged = api_client.get(f"/api/projects/{project.slug}/items/?status=flagged").json()
    assert flagged["count"] == 1
    assert api_client.get(f"/api/projects/{project.slug}/items/?status=gone").status_code == 400
    item = items["results"][0]
    assert api_client.get(f"/api/projects/{project.slug}/items/{item['id']}/").json()["id"] == item["id"]

    pairs = api_client.get(f"/api/projects/{project.slug}/pairs/").json()
    assert pairs["count"] == 19 and pairs["results"][0]["labeler"].startswith("labeler-")
    assert api_client.get(f"/api/projects/{project.slug}/pairs/?sources=import").json()["count"] == 1
    assert api_client.get(f"/api/projects/{project.slug}/pairs/?exclude_flagged=false").json()["count"] == 22
    assert api_client.get(f"/api/projects/{project.slug}/pairs/?min_agreement=0.9&sources=human").json()["count"] == 6
    bad = api_client.get(f"/api/projects/{project.slug}/pairs/?created_from=yesterday")
    assert bad.status_code == 400 and "created_from" in bad.json()

    api_client.force_authenticate(labeler)
    assert api_client.get(f"/api/projects/{project.slug}/items/").status_code == 403
    assert api_client.get(f"/api/projects/{project.slug}/pairs/").status_code == 403
