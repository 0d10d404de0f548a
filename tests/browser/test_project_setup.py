"""An admin sets up a project in the browser, without /admin/: the new-project wizard,
inviting a member, changing their role, and the grouped project menu (keyboard too)."""

import pytest

from annotation.models import Guidelines, Membership, Project, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_user

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(300)]


def test_an_admin_creates_a_project_invites_a_member_and_uses_the_menu(live_server, new_page):
    home = make_project("setup-home")
    admin = make_member(home, Role.ADMIN, "setup-admin")
    make_user("setup-ann", email="ann@example.org")
    url = live_server.url

    page = new_page()
    log_in(page, url, admin.username, PASSWORD)
    page.get_by_role("link", name="New project").click()

    # Step 1: name (the slug is made from it) and the workspace.
    page.get_by_label("Name").fill("Poetry Duels")
    page.get_by_label("Workspace").select_option(home.workspace.slug)
    page.get_by_role("button", name="Next").click()
    # Step 2: criteria, one per field.
    page.get_by_label("Criterion 1").fill("rhyme")
    page.get_by_label("Criterion 2").fill("")
    page.get_by_label("Criterion 3").fill("")
    page.get_by_role("button", name="Next").click()
    # Step 3: guidelines, then create.
    page.get_by_label("Guidelines").fill("# Read both poems aloud")
    page.get_by_role("button", name="Create project").click()

    page.wait_for_url(f"{url}/p/poetry-duels/members/")
    project = Project.objects.get(slug="poetry-duels")
    assert project.criteria == ["rhyme"]
    assert project.workspace_id == home.workspace_id
    assert Guidelines.objects.get(project=project).text == "# Read both poems aloud"

    # Invite by e-mail as a labeler, then make them a researcher.
    page.get_by_label("Username or e-mail").fill("ann@example.org")
    page.get_by_role("button", name="Add member").click()
    page.get_by_text("setup-ann added as labeler.").wait_for()
    page.get_by_label("Role of setup-ann").select_option("researcher")
    page.locator("tr[data-member=setup-ann]").get_by_role("button", name="Change role").click()
    page.get_by_text("setup-ann is now researcher.").wait_for()
    assert Membership.objects.get(project=project, user__username="setup-ann").role == "researcher"

    # The last admin cannot be demoted: a clear message, nothing changed.
    page.get_by_label("Role of setup-admin").select_option("labeler")
    page.locator("tr[data-member=setup-admin]").get_by_role("button", name="Change role").click()
    page.get_by_text("setup-admin is the project's only admin").wait_for()
    assert Membership.objects.get(project=project, user=admin).role == Role.ADMIN

    # The menu: one row of groups; a group opens with the keyboard and closes with Escape.
    nav = page.get_by_role("navigation", name="Project")
    summaries = nav.locator("summary").all_inner_texts()
    assert [text.strip(" ▾") for text in summaries] == [
        "Label",
        "Data",
        "Models",
        "Quality",
        "Project settings",
    ]
    data = nav.locator("summary", has_text="Data")
    data.focus()
    page.keyboard.press("Enter")
    assert nav.get_by_role("link", name="Export").is_visible()
    page.keyboard.press("Escape")
    assert not nav.get_by_role("link", name="Export").is_visible()
    nav.locator("summary", has_text="Project settings").click()
    nav.get_by_role("link", name="Members").click()
    page.wait_for_url(f"{url}/p/poetry-duels/members/")

    # A labeler of the new project sees the Label group only.
    make_member(project, Role.LABELER, "setup-lab")
    labeler_page = new_page()
    log_in(labeler_page, url, "setup-lab", PASSWORD)
    labeler_page.goto(f"{url}/p/poetry-duels/")
    labels = labeler_page.get_by_role("navigation", name="Project").locator("summary")
    assert [text.strip(" ▾") for text in labels.all_inner_texts()] == ["Label"]
