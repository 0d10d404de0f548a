"""Every page has an icon: base.html links one that is served, and /favicon.ico, which
browsers ask for anyway, leads to it instead of answering 404."""

import re
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.timeout(60)


def test_the_pages_link_an_icon_that_is_served(live_server):
    with urlopen(f"{live_server.url}/login/") as page:  # noqa: S310 (the test's own server)
        html = page.read().decode()
    (href,) = re.findall(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)

    with urlopen(f"{live_server.url}{href}") as icon:  # noqa: S310
        assert icon.status == 200
        assert icon.read().startswith(b"<svg")


def test_favicon_ico_leads_to_the_icon(live_server):
    with urlopen(f"{live_server.url}/favicon.ico") as icon:  # noqa: S310 (follows the redirect)
        assert icon.status == 200
        assert icon.url == f"{live_server.url}/static/favicon.svg"
        assert icon.read().startswith(b"<svg")
