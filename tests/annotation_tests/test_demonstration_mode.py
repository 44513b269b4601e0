"""An admin turns demonstrations on or off for an existing project (page and command line); others may not."""

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Project

pytestmark = pytest.mark.django_db


def test_an_admin_changes_the_mode_from_the_project_page(client, users, project):
    client.force_login(users["admin"])
    page = client.get(f"/projects/{project.slug}/").content.decode()
    assert 'name="demonstration_mode"' in page
    response = client.post(f"/projects/{project.slug}/demonstration-mode/", {"demonstration_mode": "edit_optional"}, follow=True)
    project.refresh_from_db()
    assert project.demonstration_mode == "edit_optional"
    assert "Demonstrations: after ranking, labelers may rewrite the best response." in response.content.decode()
    client.post(f"/projects/{project.slug}/demonstration-mode/", {"demonstration_mode": "sometimes"})
    project.refresh_from_db()
    assert project.demonstration_mode == "edit_optional"


@pytest.mark.parametrize("role", ["labeler", "researcher"])
def test_only_admins_change_it(client, users, project, role):
    client.force_login(users[role])
    assert 'name="demonstration_mode"' not in client.get(f"/projects/{project.slug}/").content.decode()
    assert client.post(f"/projects/{project.slug}/demonstration-mode/", {"demonstration_mode": "write"}).status_code == 403
    project.refresh_from_db()
    assert project.demonstration_mode == "off"


def test_create_project_takes_the_mode():
    call_command("create_project", "writers", "--demonstrations", "write")
    assert Project.objects.get(slug="writers").demonstration_mode == "write"
    with pytest.raises(CommandError):
        call_command("create_project", "others", "--demonstrations", "sometimes")


def test_the_api_changes_it_for_admins_only(api_client, users, project):
    url = f"/api/projects/{project.slug}/demonstration-mode/"
    api_client.force_authenticate(users["researcher"])
    assert api_client.post(url, {"demonstration_mode": "write"}, format="json").status_code == 403
    api_client.force_authenticate(users["admin"])
    response = api_client.post(url, {"demonstration_mode": "write"}, format="json")
    assert response.status_code == 200 and response.json()["demonstration_mode"] == "write"
    bad = api_client.post(url, {"demonstration_mode": "sometimes"}, format="json")
    assert bad.status_code == 400 and "demonstration_mode" in bad.json()
    project.refresh_from_db()
    assert project.demonstration_mode == "write"
