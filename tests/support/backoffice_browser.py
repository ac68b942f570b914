"""The back office in Chromium: logging a staff member in through the real login form."""

from __future__ import annotations


def log_in(page, username: str, password: str) -> None:
    """Fill the login form the page shows and wait for the page it leads to."""
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
