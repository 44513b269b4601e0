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
